#!/usr/bin/env python3
"""Builds tests/reference/fixtures/qlora/reference.safetensors (committed; rerun to regenerate): QLoRA as HF + PEFT +
bitsandbytes run it, on CPU, for tests/model/test_qlora.cpp to compare ranktune's 4-bit model with.

The base is the committed fixture llama_gqa_untied (fp32); every decoder linear (q, k, v, o, gate, up, down) becomes a
bitsandbytes Linear4bit (NF4, blocks of 64, double-quantized absmaxes, fp32 compute), quantized on CPU, as
`BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)` does; the adapter
is the committed PEFT fixture `lora` (r=4, alpha=8, all linear, lora_B random) loaded with PeftModel.from_pretrained.
Held: `input_ids`, `labels` (those of lora/reference.safetensors), `logits` and `loss` of one forward, `grad.<name>`
of every adapter weight after loss.backward() (our names, PEFT's minus `base_model.model.` and `.default`), and, for
two linears, bitsandbytes' own packed codes and absmaxes (`bnb.<module>.weight`, `bnb.<module>.weight.absmax`): the
quantizer's bytes on a real model's weights.

bitsandbytes 0.50.2 runs Linear4bit forward and backward on CPU through its default backend (dequantize, then a
matmul); the warning that the kernels-community CPU gemm cannot load is that fallback being taken.
Needs: torch, transformers, peft, safetensors, bitsandbytes==0.50.2. CI never runs this.
Usage: python3 tests/reference/make_qlora_fixture.py [--out tests/reference/fixtures/qlora]
"""
import argparse
import json
import os

import bitsandbytes as bnb
import peft
import safetensors.torch
import torch
import transformers
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
CHECKED = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]


def quantize_linears(model):
    for _, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and name.endswith("_proj"):
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4")
                q.weight = bnb.nn.Params4bit(child.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                             compress_statistics=True, blocksize=64)
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data.clone(), requires_grad=False)
                q = q.to("cpu")  # .to() quantizes
                # Else a first forward without input gradients (layer 0's q/k/v in eval mode) repacks the weight into
                # bnb's AVX-512 CPU layout with bf16 absmaxes: another computation than the NF4 format's.
                q.support_avx512bf16_for_cpu = False
                setattr(parent, name, q)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(FIXTURES, "qlora"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    lora_ref = safetensors.torch.load_file(os.path.join(FIXTURES, "lora", "reference.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(os.path.join(FIXTURES, "llama_gqa_untied"), dtype=torch.float32,
                                                 attn_implementation="eager")
    quantize_linears(model)
    model = peft.PeftModel.from_pretrained(model, os.path.join(FIXTURES, "lora"), is_trainable=True)
    model.eval()
    out = model(input_ids=lora_ref["input_ids"], labels=lora_ref["labels"])
    out.loss.backward()
    tensors = {"input_ids": lora_ref["input_ids"], "labels": lora_ref["labels"],
               "logits": out.logits.detach().float().contiguous(), "loss": out.loss.detach().float().reshape(())}
    for n, p in model.named_parameters():
        if "lora_" in n:
            assert p.grad is not None, n
            ours = n.removeprefix("base_model.model.").replace(".default.", ".")
            tensors["grad." + ours] = p.grad.detach().float().contiguous()
        else:
            assert p.grad is None, n
    modules = dict(model.named_modules())
    for mod in CHECKED:
        w = modules["base_model.model." + mod].weight
        tensors[f"bnb.{mod}.weight"] = w.data.contiguous()
        tensors[f"bnb.{mod}.weight.absmax"] = w.quant_state.absmax.contiguous()
    os.makedirs(args.out, exist_ok=True)
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "bitsandbytes": bnb.__version__, "base": "llama_gqa_untied", "adapter": "lora",
            "description": "PEFT LoRA (fixture lora) over bitsandbytes NF4 Linear4bit of llama_gqa_untied, CPU fp32"}
    safetensors.torch.save_file(tensors, os.path.join(args.out, "reference.safetensors"), metadata=meta)
    print(json.dumps({k: list(v.shape) for k, v in tensors.items() if not k.startswith("grad.")}))


if __name__ == "__main__":
    main()
