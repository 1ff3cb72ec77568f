#!/usr/bin/env python3
"""The peer side of bench/train_throughput.sh: Hugging Face transformers (+ PEFT) training steps on the same
TinyLlama-1.1B shape ranktune is measured on, in the same run on the same GPU.

Full fine-tune: fp32 master weights, bf16 autocast, fused AdamW. LoRA: bf16 base, PEFT r=16 on all linear layers,
fused AdamW on the adapters. SDPA attention. Random weights and random tokens (throughput does not depend on them).
Prints one JSON object per mode: tokens/s, MFU against the H100/H200 dense bf16 peak, peak memory.
"""
import argparse

import torch

from peer_common import time_and_report


def run(mode, args):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                      intermediate_size=5632, vocab_size=32000, max_position_embeddings=args.seq,
                      tie_word_embeddings=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    dev = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats()
    lora = mode == "lora"
    if lora:
        from peft import LoraConfig, get_peft_model

        model = LlamaForCausalLM(cfg).to(dev, torch.bfloat16)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"]))
    else:
        model = LlamaForCausalLM(cfg).to(dev)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    tokens = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=not lora):
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    time_and_report(step, "hf+peft" if lora else "hf", mode, cfg, lora, args)
    del model, opt
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    for mode in args.modes.split(","):
        run(mode, args)


if __name__ == "__main__":
    main()
