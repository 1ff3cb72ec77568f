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
With --device and/or --dtype given, it writes a parity fixture instead, for the test QloraPeftGpu (pointed at it by
RANKTUNE_QLORA_FIXTURE_DIR; bench/qlora_gpu_parity.sh runs both on the GPU machine): the base loaded in --dtype on
--device and quantized there (`--device cuda --dtype bfloat16`: bitsandbytes' CUDA quantizer and a bf16 compute_dtype,
as a QLoRA run of PEFT + bitsandbytes holds it; PEFT keeps the adapters in fp32), the bytes of every quantized linear,
and metadata naming device, dtype and the absolute base and adapter directories (the test binary may run where its
compiled-in fixture path does not exist), and the fp32 truth both bf16 runs are measured against (fp32_truth). Without
either option the output is the committed fixture's.
Needs: torch, transformers, peft, safetensors, bitsandbytes==0.50.2. CI never runs this.
Usage: python3 tests/reference/make_qlora_fixture.py [--out DIR] [--device cpu|cuda] [--dtype float32|bfloat16]
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
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def quantize_linears(model, device="cpu", compute_dtype=torch.float32):
    for _, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and name.endswith("_proj"):
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4")
                q.weight = bnb.nn.Params4bit(child.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                             compress_statistics=True, blocksize=64)
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data.clone(), requires_grad=False)
                q = q.to(device)  # .to() quantizes, on that device
                # Else a first forward without input gradients (layer 0's q/k/v in eval mode) repacks the weight into
                # bnb's AVX-512 CPU layout with bf16 absmaxes: another computation than the NF4 format's.
                q.support_avx512bf16_for_cpu = False
                setattr(parent, name, q)


def fp32_truth(modules, checked, device, lora_ref):
    """The same QLoRA model computed in fp32 on `device` (TF32 off): the base's own 4-bit weights, dequantized by
    bitsandbytes and widened, in plain fp32 linears, under the same fp32 adapters. Both bf16 runs (PEFT + bnb here,
    ranktune in the test) are measured against it: `logits_fp32`, `loss_fp32`, `grad_fp32.<name>`."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(os.path.join(FIXTURES, "llama_gqa_untied"), dtype=torch.float32,
                                                 attn_implementation="eager").to(device)
    ours = dict(model.named_modules())
    for mod in checked:
        w = modules["base_model.model." + mod].weight
        deq = bnb.functional.dequantize_4bit(w.data, w.quant_state).to(torch.float32)
        ours[mod].weight.data.copy_(deq.reshape(ours[mod].weight.shape))
    model = peft.PeftModel.from_pretrained(model, os.path.join(FIXTURES, "lora"), is_trainable=True)
    model.eval()
    out = model(input_ids=lora_ref["input_ids"].to(device), labels=lora_ref["labels"].to(device))
    out.loss.backward()
    truth = {"logits_fp32": out.logits.detach().float().cpu().contiguous(),
             "loss_fp32": out.loss.detach().float().cpu().reshape(())}
    for n, p in model.named_parameters():
        if "lora_" in n:
            truth["grad_fp32." + n.removeprefix("base_model.model.").replace(".default.", ".")] = \
                p.grad.detach().float().cpu().contiguous()
    return truth


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(FIXTURES, "qlora"))
    ap.add_argument("--device", choices=["cpu", "cuda"], help="a parity fixture made on this device")
    ap.add_argument("--dtype", choices=list(DTYPES), help="a parity fixture with this base and compute dtype")
    args = ap.parse_args()
    parity = args.device is not None or args.dtype is not None
    if parity and os.path.abspath(args.out) == os.path.join(FIXTURES, "qlora"):
        ap.error("--device/--dtype write a parity fixture: give it its own --out, not the committed directory")
    device, dtype = torch.device(args.device or "cpu"), DTYPES[args.dtype or "float32"]
    torch.set_num_threads(1)
    if device.type == "cuda":  # cuBLAS is deterministic only with a fixed workspace; set before CUDA starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    lora_ref = safetensors.torch.load_file(os.path.join(FIXTURES, "lora", "reference.safetensors"))
    # A parity fixture runs transformers' default attention (SDPA), as a QLoRA user's run does.
    attn = "sdpa" if parity else "eager"
    model = AutoModelForCausalLM.from_pretrained(os.path.join(FIXTURES, "llama_gqa_untied"), dtype=dtype,
                                                 attn_implementation=attn).to(device)
    quantize_linears(model, device, dtype)
    model = peft.PeftModel.from_pretrained(model, os.path.join(FIXTURES, "lora"), is_trainable=True)
    model.eval()
    for n, p in model.named_parameters():
        if "lora_" in n:  # PEFT's adapters stay fp32 over a 16-bit base: the precision the comparison assumes
            assert p.dtype == torch.float32 and p.device.type == device.type, (n, p.dtype, p.device)
    out = model(input_ids=lora_ref["input_ids"].to(device), labels=lora_ref["labels"].to(device))
    out.loss.backward()
    tensors = {"input_ids": lora_ref["input_ids"], "labels": lora_ref["labels"],
               "logits": out.logits.detach().float().cpu().contiguous(),
               "loss": out.loss.detach().float().cpu().reshape(())}
    for n, p in model.named_parameters():
        if "lora_" in n:
            assert p.grad is not None, n
            ours = n.removeprefix("base_model.model.").replace(".default.", ".")
            tensors["grad." + ours] = p.grad.detach().float().cpu().contiguous()
        else:
            assert p.grad is None, n
    modules = dict(model.named_modules())
    checked = [n.removeprefix("base_model.model.").removesuffix(".base_layer") for n, m in modules.items()
               if isinstance(m, bnb.nn.Linear4bit)] if parity else CHECKED
    if parity:
        tensors.update(fp32_truth(modules, checked, device, lora_ref))
    for mod in checked:
        w = modules["base_model.model." + mod].weight
        tensors[f"bnb.{mod}.weight"] = w.data.cpu().contiguous()
        tensors[f"bnb.{mod}.weight.absmax"] = w.quant_state.absmax.cpu().contiguous()
    os.makedirs(args.out, exist_ok=True)
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "bitsandbytes": bnb.__version__, "base": "llama_gqa_untied", "adapter": "lora",
            "description": "PEFT LoRA (fixture lora) over bitsandbytes NF4 Linear4bit of llama_gqa_untied, CPU fp32"}
    if parity:
        meta.update({"device": device.type, "dtype": args.dtype or "float32",
                     "base_dir": os.path.join(FIXTURES, "llama_gqa_untied"),
                     "adapter_dir": os.path.join(FIXTURES, "lora"), "attn_implementation": attn,
                     "description": f"PEFT LoRA (fixture lora) over bitsandbytes NF4 Linear4bit of llama_gqa_untied, "
                                    f"{device.type} {args.dtype or 'float32'} compute"})
        if device.type == "cuda":
            meta["gpu"] = torch.cuda.get_device_name(device)
    safetensors.torch.save_file(tensors, os.path.join(args.out, "reference.safetensors"), metadata=meta)
    print(json.dumps({k: list(v.shape) for k, v in tensors.items() if not k.startswith("grad.")}))


if __name__ == "__main__":
    main()
