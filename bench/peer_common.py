"""What the peers of bench/train_throughput.sh (hf_peer.py, unsloth_peer.py) share, so that their rows are counted
and timed exactly alike: the FLOPs per token of the TinyLlama-1.1B shape, and the timing rule (the median step after
warm-up, as ranktune's rows, peak allocated memory)."""
import json
import statistics
import time

import torch

PEAK_TFLOPS = 989.0  # H100 SXM / H200 dense bf16 (datasheet), as in docs/benchmarks.md


def flops_per_token(cfg, lora, seq):
    d, L, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    layer = 2 * d * d + 2 * d * kv + 3 * d * cfg.intermediate_size
    n = L * layer + d * V  # non-embedding parameters incl. the untied lm_head
    return (4 if lora else 6) * n + 12 * L * d * seq  # LoRA: no weight gradients of the frozen base


def time_and_report(step, impl, mode, cfg, lora, args):
    """Runs args.warmup then args.steps calls of step() (which returns the loss) and prints the row as JSON."""
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
    tps = args.batch * args.seq / dt
    print(json.dumps({"impl": impl, "mode": mode, "tokens_per_s": round(tps), "step_ms": round(dt * 1e3, 1),
                      "mfu": round(tps * flops_per_token(cfg, lora, args.seq) / (PEAK_TFLOPS * 1e12), 4),
                      "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                      "loss": round(float(loss.detach()), 4), "batch": args.batch, "seq": args.seq}), flush=True)
