#!/usr/bin/env python3
"""The Unsloth side of bench/train_throughput.sh: Unsloth LoRA training steps on the same shape (--shape:
TinyLlama-1.1B or Llama-3-8B, bench/peer_common.py), in the same run on the same GPU as ranktune and HF + PEFT.

Unsloth loads models by directory, so a random-init model (and a made-up word-level tokenizer of the model's
vocabulary, which Unsloth insists on loading) is written with save_pretrained first: to a temporary directory, or to
--model-dir, where a later call (another --seq) finds and reuses it. LoRA r=16 on all linear layers as the other rows, with
Unsloth's fused kernels; "lora" keeps a bf16 base, "qlora" loads the base in 4 bits (bitsandbytes NF4); a "_gc"
suffix adds Unsloth's default gradient checkpointing ("unsloth": activations offloaded to host memory). The step is
the same plain loop as bench/hf_peer.py (model(input_ids, labels).loss, backward, fused AdamW on the adapters), timed
by the same rule (bench/peer_common.py). Needs Unsloth on PYTHONPATH (bench/carry_unsloth.sh packs it) and
UNSLOTH_DISABLE_STATISTICS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 (the GPU machine has no internet).
"""
import argparse
import json
import os
import sys
import tempfile
import traceback

from peer_common import SHAPES, time_and_report, write_model_dir

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run(mode, model_dir, cfg, args):
    import torch
    from unsloth import FastLanguageModel

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model, _ = FastLanguageModel.from_pretrained(model_name=model_dir, max_seq_length=args.seq,
                                                 dtype=torch.bfloat16, load_in_4bit=mode.startswith("qlora"))
    # "_gc": Unsloth's own gradient checkpointing (activations offloaded to the host); without it the same work as
    # ranktune's rows without activation checkpointing.
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=32, lora_dropout=0.0, bias="none",
                                             target_modules=TARGETS, random_state=0,
                                             use_gradient_checkpointing="unsloth" if mode.endswith("_gc") else False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=g).to(dev)

    def step():
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    time_and_report(step, "unsloth", mode, cfg, True, args)
    del model, opt
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default="lora,lora_gc,qlora,qlora_gc")
    ap.add_argument("--shape", default="1b", choices=tuple(SHAPES))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--max-position", type=int, default=0,
                    help="max_position_embeddings of a model written here, if more than --seq (later calls' --seq)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--model-dir", default="",
                    help="where the model is written, or found by a later call (default: a temporary directory)")
    args = ap.parse_args()
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import unsloth  # noqa: F401  (Unsloth patches transformers on import: it must come first)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or os.path.join(tmp, f"llama-{args.shape}-shape")
        if not os.path.exists(os.path.join(model_dir, "config.json")):
            cfg = write_model_dir(model_dir, args.shape, max(args.seq, args.max_position))
        else:
            from transformers import AutoConfig
            cfg = AutoConfig.from_pretrained(model_dir)
        for mode in args.modes.split(","):
            try:
                run(mode, model_dir, cfg, args)
            except Exception as e:  # one mode failing must not hide the others' rows
                traceback.print_exc(file=sys.stderr)
                print(json.dumps({"impl": "unsloth", "mode": mode, "error": f"{type(e).__name__}: {e}"[:300]}),
                      flush=True)


if __name__ == "__main__":
    main()
