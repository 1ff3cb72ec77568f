#!/usr/bin/env python3
"""Builds the model parity fixtures under tests/reference/fixtures/ (committed; rerun to regenerate).

Each case is a tiny random-init Hugging Face model saved as a real HF directory (config.json + safetensors, written by
transformers itself) plus reference.safetensors: fixed input tokens, labels, the fp32 logits, the loss and the gradients
of selected parameters, computed by transformers (eager attention, fp32, CPU). The `lora` case does the same through
PEFT with non-zero adapters. tests/model/ loads these with ranktune's loader and compares.

Reruns reproduce every tensor bit for bit; only the order of safetensors metadata keys may change.
Needs: torch, transformers, peft, safetensors (pip install transformers peft safetensors). CI never runs this.
Usage: python3 tests/reference/make_model_fixtures.py [--out tests/reference/fixtures]
"""
import argparse
import json
import os
import shutil

import peft
import safetensors
import safetensors.torch
import torch
import transformers

BATCH, SEQ = 2, 12


def versions():
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "safetensors": safetensors.__version__,
    }


def common_shape(**overrides):
    shape = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
    )
    shape.update(overrides)
    return shape


def make_model(config_cls, model_cls, seed, **cfg):
    torch.manual_seed(seed)
    config = config_cls(**cfg)
    config._attn_implementation = "eager"  # an implementation independent of our SDPA path
    model = model_cls(config).float().eval()
    # HF initialises norms to one and biases to zero: randomise them so that a wrong mapping cannot hide.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return model


def round_to(model, dtype):
    """Rounds the fp32 weights to `dtype` values so that a file stored in `dtype` holds exactly the reference model."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())


def inputs(vocab, seed, position_offset=None):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab, (BATCH, SEQ), generator=g)
    labels = input_ids.clone()
    labels[0, :3] = -100  # a masked prompt, as in supervised fine-tuning
    labels[1, 5] = -100
    position_ids = None
    if position_offset is not None:
        position_ids = (torch.arange(SEQ) + position_offset).unsqueeze(0).expand(BATCH, SEQ).contiguous()
    return input_ids, labels, position_ids


def run_reference(model, input_ids, labels, position_ids, grad_names):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, labels=labels, position_ids=position_ids)
    out.loss.backward()
    params = dict(model.named_parameters())
    tensors = {
        "input_ids": input_ids,
        "labels": labels,
        "logits": out.logits.detach().float().contiguous(),
        "loss": out.loss.detach().float().reshape(()),
    }
    if position_ids is not None:
        tensors["position_ids"] = position_ids
    for name in grad_names:
        tensors["grad." + name] = params[name].grad.detach().float().contiguous()
    return tensors


def save_reference(path, tensors, description, extra=None):
    meta = dict(versions())
    meta["description"] = description
    meta["grad_names"] = ",".join(sorted(k[5:] for k in tensors if k.startswith("grad.")))
    if extra:
        meta.update(extra)
    safetensors.torch.save_file(tensors, path, metadata=meta)


def save_hf_dir(model, out_dir, dtype, max_shard_size=None):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    model.to(dtype)
    kwargs = {"safe_serialization": True}
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(out_dir, **kwargs)
    model.float()
    gen = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)


LLAMA = (transformers.LlamaConfig, transformers.LlamaForCausalLM)
QWEN2 = (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)
MISTRAL = (transformers.MistralConfig, transformers.MistralForCausalLM)

# name: (classes, config overrides, on-disk dtype, sharded?, position offset, grads, description)
CASES = {
    "llama_gqa_untied": (
        LLAMA, dict(tie_word_embeddings=False, rope_theta=10000.0), torch.float32, None, None,
        ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
         "model.layers.1.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight", "model.norm.weight",
         "lm_head.weight"],
        "Llama, GQA 4 heads / 2 KV heads, untied lm_head, fp32 on disk"),
    "llama_tied": (
        LLAMA, dict(tie_word_embeddings=True, num_key_value_heads=4, rope_theta=10000.0), torch.bfloat16, None, None,
        ["model.embed_tokens.weight", "model.layers.1.self_attn.v_proj.weight", "model.layers.0.mlp.gate_proj.weight",
         "model.layers.1.post_attention_layernorm.weight"],
        "Llama, tied embeddings, MHA, bf16 on disk"),
    "qwen2_bias": (
        QWEN2, dict(tie_word_embeddings=False, rope_theta=1000000.0, use_sliding_window=False), torch.float16, None,
        None,
        ["model.layers.0.self_attn.q_proj.bias", "model.layers.1.self_attn.k_proj.bias",
         "model.layers.0.self_attn.v_proj.bias", "model.layers.0.self_attn.o_proj.weight", "lm_head.weight"],
        "Qwen2, q/k/v bias, fp16 on disk"),
    "llama3_rope": (
        LLAMA,
        dict(tie_word_embeddings=False, head_dim=16,
             rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                  high_freq_factor=4.0, original_max_position_embeddings=64)),
        torch.float32, "100KB", 37,
        ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
         "lm_head.weight"],
        "Llama 3.1-style rope_scaling llama3 (low, medium and high frequencies), positions from 37, sharded on disk"),
    "mistral_head_dim": (
        MISTRAL, dict(tie_word_embeddings=False, head_dim=24, sliding_window=4096, rope_theta=1000000.0),
        torch.float32, None, None,
        ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight", "lm_head.weight"],
        "Mistral, explicit head_dim 24 != hidden/heads, sliding window larger than the sequence"),
}


def build_case(out_root, name, spec, seed):
    (cfg_cls, model_cls), overrides, dtype, shard, offset, grads, description = spec
    model = make_model(cfg_cls, model_cls, seed, **common_shape(**overrides))
    if dtype != torch.float32:
        round_to(model, dtype)
    out_dir = os.path.join(out_root, name)
    input_ids, labels, position_ids = inputs(model.config.vocab_size, seed + 1000, offset)
    tensors = run_reference(model, input_ids, labels, position_ids, grads)
    save_hf_dir(model, out_dir, dtype, shard)
    save_reference(os.path.join(out_dir, "reference.safetensors"), tensors, description)
    return model, input_ids, labels


def build_lora(out_root, base_model, input_ids, labels):
    base_model.zero_grad(set_to_none=True)
    torch.manual_seed(4242)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"])
    model = peft.get_peft_model(base_model, config)
    with torch.no_grad():  # non-zero lora_B, else the adapters would be invisible in the logits
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn_like(p))
    model.eval()
    out = model(input_ids=input_ids, labels=labels)
    out.loss.backward()
    out_dir = os.path.join(out_root, "lora")
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir)
    adapter_config = os.path.join(out_dir, "adapter_config.json")
    with open(adapter_config) as f:
        saved = json.load(f)
    saved["target_modules"] = sorted(saved["target_modules"])  # PEFT writes a set: fix its order for stable diffs
    with open(adapter_config, "w") as f:
        json.dump(saved, f, indent=2, sort_keys=True)
        f.write("\n")
    readme = os.path.join(out_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    tensors = {"input_ids": input_ids, "labels": labels, "logits": out.logits.detach().float().contiguous(),
               "loss": out.loss.detach().float().reshape(())}
    checked = ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj", "model.layers.0.mlp.down_proj",
               "model.layers.1.mlp.gate_proj"]
    params = dict(model.named_parameters())
    for mod in checked:
        for ab in ("lora_A", "lora_B"):
            peft_name = f"base_model.model.{mod}.{ab}.default.weight"
            tensors[f"grad.{mod}.{ab}.weight"] = params[peft_name].grad.detach().float().contiguous()
    frozen_with_grad = [n for n, p in params.items() if "lora_" not in n and p.grad is not None]
    assert not frozen_with_grad, frozen_with_grad
    merged = model.merge_and_unload()
    with torch.no_grad():
        tensors["merged_logits"] = merged(input_ids=input_ids).logits.detach().float().contiguous()
    save_reference(os.path.join(out_dir, "reference.safetensors"), tensors,
                   "PEFT LoRA r=4 alpha=8 on all linear layers of llama_gqa_untied, lora_B random",
                   {"base": "llama_gqa_untied"})


def build_safetensors_format(out_root):
    """A file written by the python safetensors library, so that the C++ writer can be compared byte for byte."""
    g = torch.Generator().manual_seed(7)
    tensors = {
        "b.bf16": torch.randn(3, 5, generator=g).to(torch.bfloat16),
        "a.f32": torch.randn(4, 2, generator=g),
        "c.f16": torch.randn(7, generator=g).to(torch.float16),
        "d.i64": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "e.scalar": torch.tensor(3.5),
        "f.empty": torch.zeros(0, 4),
    }
    safetensors.torch.save_file(tensors, os.path.join(out_root, "format.safetensors"), metadata={"format": "pt"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    built = {}
    for i, (name, spec) in enumerate(CASES.items()):
        built[name] = build_case(args.out, name, spec, seed=100 + i)
    base, input_ids, labels = built["llama_gqa_untied"]
    build_lora(args.out, base, input_ids, labels)
    build_safetensors_format(args.out)
    with open(os.path.join(args.out, "VERSIONS.json"), "w") as f:
        json.dump(versions(), f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
