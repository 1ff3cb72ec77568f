#!/usr/bin/env python3
"""The peer side of bench/train_throughput.sh: Hugging Face transformers (+ PEFT) training steps on the same shape
ranktune is measured on (--shape: TinyLlama-1.1B or Llama-3-8B, bench/peer_common.py), in the same run on the same GPU.

Full fine-tune: fp32 master weights, bf16 autocast, fused AdamW. LoRA: bf16 base, PEFT r=16 on all linear layers,
fused AdamW on the adapters. QLoRA ("qlora", impl hf+peft+bnb): the same random-init model saved in bf16 with
save_pretrained and loaded back by transformers in 4 bits (BitsAndBytesConfig: NF4, double quantization, bf16
compute), as a QLoRA user loads a 16-bit checkpoint, then the same PEFT LoRA; no gradient checkpointing, like the
other rows. SDPA attention. Random weights and random tokens (throughput does not depend on them).
Prints one JSON object per mode: tokens/s, MFU against the H100/H200 dense bf16 peak, peak memory.
bitsandbytes is needed by (and imported for) the qlora mode only; on the GPU machine it comes from
.deps/unsloth.tar.xz (bench/train_throughput.sh puts it on PYTHONPATH when HF_MODES names qlora).
"""
import argparse
import tempfile

import torch

from peer_common import llama_config, random_model, time_and_report

MODES = ("full", "lora", "qlora")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_4bit(cfg, dev):
    """llama(cfg)'s random init (the torch seed as set) written in bf16 and read back with bitsandbytes NF4 linears."""
    import bitsandbytes  # noqa: F401  (transformers' 4-bit loading needs it: fail here, by name, if it is missing)
    from transformers import BitsAndBytesConfig, LlamaForCausalLM

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        random_model(cfg, dev).save_pretrained(tmp)
        return LlamaForCausalLM.from_pretrained(tmp, quantization_config=quant, dtype=torch.bfloat16,
                                                device_map={"": dev}, attn_implementation="sdpa")


def make_model(mode, cfg, dev):
    """The model a mode trains, on dev: fp32 (full), bf16 + PEFT LoRA (lora), NF4 + PEFT LoRA (qlora)."""
    from transformers import LlamaForCausalLM

    if mode == "full":
        return LlamaForCausalLM(cfg).to(dev)
    from peft import LoraConfig, get_peft_model

    model = random_model(cfg, dev) if mode == "lora" else load_4bit(cfg, dev)
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS))


def run(mode, args):
    cfg = llama_config(args.shape, args.seq, attn_implementation="sdpa")
    torch.manual_seed(0)
    dev = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats()
    lora = mode != "full"
    model = make_model(mode, cfg, dev)
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

    impl = {"full": "hf", "lora": "hf+peft", "qlora": "hf+peft+bnb"}[mode]
    time_and_report(step, impl, mode, cfg, lora, args)
    del model, opt
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default="full,lora", help="comma-separated: full, lora, qlora")
    ap.add_argument("--shape", default="1b", choices=("1b", "8b"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    modes = args.modes.split(",")
    for mode in modes:  # before minutes of runs, not after them
        if mode not in MODES:
            ap.error(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
    for mode in modes:
        run(mode, args)


if __name__ == "__main__":
    main()
