"""What the peers of bench/train_throughput.sh (hf_peer.py, unsloth_peer.py) share, so that their rows are counted
and timed exactly alike: the benchmark shapes (TinyLlama-1.1B and Llama-3-8B, as train_throughput.sh's BENCH_SHAPE),
the FLOPs per token, the timing rule (the median step after warm-up, as ranktune's rows, peak allocated memory), and
the random-init model directory Unsloth loads (and ranktune's 8B rows too: drawn on the GPU in seconds, where
ranktune's own CPU-seeded initialisation of 8B parameters takes about a minute)."""
import json
import statistics
import time

import torch

PEAK_TFLOPS = 989.0  # H100 SXM / H200 dense bf16 (datasheet), as in docs/benchmarks.md

# The shapes of bench/train_throughput.sh's BENCH_SHAPE (the same numbers as its ranktune rows), untied head.
SHAPES = {
    "1b": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
               intermediate_size=5632, vocab_size=32000, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=14336, vocab_size=128256, rope_theta=500000.0, bos_token_id=1, eos_token_id=2,
               pad_token_id=0),
}


def llama_config(shape, seq, **extra):
    """transformers' LlamaConfig of a benchmark shape (SHAPES) for sequences up to seq."""
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPES[shape], max_position_embeddings=seq, tie_word_embeddings=False, **extra)


def random_model(cfg, device):
    """A random-init bf16 LlamaForCausalLM made on device (an 8B model is drawn in seconds on a GPU, minutes on a CPU);
    the torch seed as set."""
    from transformers import LlamaForCausalLM

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            return LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)


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


def write_model_dir(path, shape, seq):
    """A random-init bf16 model of the benchmark shape and a word-level tokenizer of the same vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    cfg = llama_config(shape, seq)
    torch.manual_seed(0)
    model = random_model(cfg, "cuda" if torch.cuda.is_available() else "cpu")
    model.save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"w{i}": i for i in range(3, cfg.vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<unk>", model_max_length=seq).save_pretrained(path)
    return cfg


if __name__ == "__main__":  # python3 bench/peer_common.py DIR --shape 8b --seq N: the model ranktune's rows load too
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--shape", default="1b", choices=tuple(SHAPES))
    ap.add_argument("--seq", type=int, default=2048)
    args = ap.parse_args()
    write_model_dir(args.dir, args.shape, args.seq)
