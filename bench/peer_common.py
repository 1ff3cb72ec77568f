"""What the peers of bench/train_throughput.sh (hf_peer.py, unsloth_peer.py) share, so that their rows are counted
and timed exactly alike: the benchmark shapes (TinyLlama-1.1B and Llama-3-8B, as train_throughput.sh's BENCH_SHAPE),
the FLOPs per token, the timing rule (the median step after warm-up, as ranktune's rows, peak allocated memory), and
the random-init model directory Unsloth loads (and ranktune's 8B rows too: drawn on the GPU in seconds, where
ranktune's own CPU-seeded initialisation of 8B parameters takes about a minute), and its 4-bit form for the 70B shape
(write_bnb4_dir, --bnb4: bench/qlora_70b.sh)."""
import json
import os
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
    # Llama-3.3-70B's shape: written only as a 4-bit directory (write_bnb4_dir), which is how it fits one GPU.
    "70b": dict(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                intermediate_size=28672, vocab_size=128256, rope_theta=500000.0, bos_token_id=1, eos_token_id=2,
                pad_token_id=0),
    # A few-MB model for checking the writers themselves on a CPU.
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256, vocab_size=512, bos_token_id=1, eos_token_id=2, pad_token_id=0),
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
    cfg = llama_config(shape, seq)
    torch.manual_seed(0)
    model = random_model(cfg, "cuda" if torch.cuda.is_available() else "cpu")
    model.save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    write_tokenizer(path, cfg.vocab_size, seq)
    return cfg


def write_tokenizer(path, vocab_size, seq):
    """A word-level tokenizer of vocab_size ids (Unsloth insists on loading one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"w{i}": i for i in range(3, vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<unk>", model_max_length=seq).save_pretrained(path)


# transformers' quantization_config for BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
# bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16), as save_pretrained writes it.
BNB4_CONFIG = {"_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_compute_dtype": "bfloat16",
               "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
               "llm_int8_enable_fp32_cpu_offload": False, "llm_int8_has_fp16_weight": False,
               "llm_int8_skip_modules": None, "llm_int8_threshold": 6.0, "load_in_4bit": True, "load_in_8bit": False,
               "quant_method": "bitsandbytes"}


def write_bnb4_dir(path, shape, seq, device):
    """A random-init model of the shape as a "...-bnb-4bit" directory, the layout transformers + bitsandbytes save
    (NF4, blocks of 64, double-quantized absmax; embeddings, norms and head in bf16): every decoder linear is drawn in
    bf16 on device, quantized there by bitsandbytes and written with its layer, one shard a layer, so the model never
    exists in 16 bits (the 70B shape: about 40 GB on disk instead of 140). Loaded by ranktune (model.path, taken as
    stored), transformers and Unsloth alike."""
    import bitsandbytes.functional as bnbf
    from safetensors.torch import save_file

    cfg = llama_config(shape, seq)
    d, ffn, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    linears = {"self_attn.q_proj": (d, d), "self_attn.k_proj": (kv, d), "self_attn.v_proj": (kv, d),
               "self_attn.o_proj": (d, d), "mlp.gate_proj": (ffn, d), "mlp.up_proj": (ffn, d),
               "mlp.down_proj": (d, ffn)}
    os.makedirs(path, exist_ok=True)
    gen = torch.Generator(device).manual_seed(0)
    std = cfg.initializer_range
    weight_map, total = {}, 0

    def draw(*size):
        return torch.empty(size, dtype=torch.bfloat16, device=device).normal_(0, std, generator=gen)

    def save(file, tensors):
        nonlocal total
        tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
        save_file(tensors, os.path.join(path, file), metadata={"format": "pt"})
        weight_map.update({k: file for k in tensors})
        total += sum(t.numel() * t.element_size() for t in tensors.values())

    n = cfg.num_hidden_layers + 2
    save(f"model-00001-of-{n:05d}.safetensors", {"model.embed_tokens.weight": draw(V, d)})
    ones = lambda: torch.ones(d, dtype=torch.bfloat16)  # noqa: E731 (safetensors refuses shared storage)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        layer = {p + "input_layernorm.weight": ones(), p + "post_attention_layernorm.weight": ones()}
        for name, size in linears.items():
            packed, state = bnbf.quantize_4bit(draw(*size), blocksize=64, compress_statistics=True,
                                               quant_type="nf4", quant_storage=torch.uint8)
            layer[p + name + ".weight"] = packed
            layer.update({f"{p}{name}.weight.{k}": v for k, v in state.as_dict(packed=True).items()})
        save(f"model-{i + 2:05d}-of-{n:05d}.safetensors", layer)
    save(f"model-{n:05d}-of-{n:05d}.safetensors", {"model.norm.weight": ones(), "lm_head.weight": draw(V, d)})
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    config = cfg.to_dict()
    config.update(dtype="bfloat16", quantization_config=BNB4_CONFIG, architectures=["LlamaForCausalLM"])
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    write_tokenizer(path, V, seq)
    return cfg


if __name__ == "__main__":  # python3 bench/peer_common.py DIR --shape 8b --seq N: the model ranktune's rows load too
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--shape", default="1b", choices=tuple(SHAPES))
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--bnb4", action="store_true", help="write a 4-bit directory (write_bnb4_dir)")
    args = ap.parse_args()
    if args.bnb4:
        write_bnb4_dir(args.dir, args.shape, args.seq, "cuda" if torch.cuda.is_available() else "cpu")
    else:
        write_model_dir(args.dir, args.shape, args.seq)
