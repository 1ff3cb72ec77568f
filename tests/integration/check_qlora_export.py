#!/usr/bin/env python3
"""Checks the exports of a QLoRA checkpoint (model.quantize=nf4) against bitsandbytes, transformers and peft
(tests/integration/qlora_export.sh drives it).

  check_qlora_export.py deps                       exit 77 (skip) when transformers, peft, safetensors or
                                                   bitsandbytes is missing
  check_qlora_export.py merged M32 M16 ADAPTER BASE REF.f32 TOKEN...
        every decoder linear of the merged exports (M32 fp32, M16 bf16) is bitsandbytes' dequantize_4bit(
        quantize_4bit(W, nf4, blocks of 64, double quantization)) of BASE's fp32 weight W plus scale * B A from the
        PEFT adapter export ADAPTER: M32 to fp32 rounding (1e-6 of the largest), M16 that rounded to bf16 (within
        one bf16 step); every other tensor is BASE's; and folding B A into W itself, unquantized, is far off
        (> 1e-2). transformers on M32 gives ranktune's logits REF.f32 (its 4-bit model with the adapters unmerged,
        checkpoint_logits) within 1e-5, on M16 within 2e-2 (bf16 weights), and the unquantized fold does not
        (> 1e-4)
  check_qlora_export.py peft ADAPTER BASE REF.f32 TOKEN...
        peft loads ADAPTER on BASE loaded 4-bit by transformers + bitsandbytes (nf4, double quantization, fp32
        compute, CPU; training mode without dropout, bnb's exact path) and gives REF.f32 within 1e-4
  check_qlora_export.py bnb BASE OUT               BASE loaded 4-bit by transformers + bitsandbytes on the CPU and
                                                   saved: a "...-bnb-4bit" directory, then resharded in two with
                                                   q_proj of layer 0 cut between its packed weight and the rest
"""
import importlib.util
import json
import os
import sys

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj"]


def deps():
    missing = [m for m in ("transformers", "peft", "safetensors", "bitsandbytes")
               if importlib.util.find_spec(m) is None]
    if missing:
        print("SKIP: python packages missing: " + ", ".join(missing) + " (scripts/setup.sh installs them)")
        return 77
    return 0


def rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def tensors(path):
    from safetensors.torch import load_file
    return load_file(os.path.join(path, "model.safetensors"))


def logits_of(model_dir, tokens, state=None):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    if state is not None:
        model.load_state_dict(state, strict=False)
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float()


def read_ref(path, tokens):
    import numpy as np
    import torch
    return torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(len(tokens), -1))


def merged(m32, m16, adapter, base, ref_path, tokens):
    import bitsandbytes.functional as F
    import torch
    from safetensors.torch import load_file
    torch.set_num_threads(1)
    conf = json.load(open(os.path.join(adapter, "adapter_config.json")))
    scale = conf["lora_alpha"] / conf["r"]
    lora = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    b, e32, e16 = tensors(base), tensors(m32), tensors(m16)
    bad, worst32, worst16, naive_gap = [], 0.0, 0.0, float("inf")
    want, naive = {}, {}
    layers = json.load(open(os.path.join(base, "config.json")))["num_hidden_layers"]
    for i in range(layers):
        for lin in LINEARS:
            name = f"model.layers.{i}.{lin}.weight"
            w = b[name].float()
            q, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
            d = F.dequantize_4bit(q, state).float()
            key = f"base_model.model.model.layers.{i}.{lin}"
            delta = torch.zeros_like(w)
            if key + ".lora_A.weight" in lora:
                delta = (lora[key + ".lora_B.weight"].float() @ lora[key + ".lora_A.weight"].float()) * scale
            want[name], naive[name] = d + delta, w + delta
            worst32 = max(worst32, rel(e32[name], want[name]))
            # bf16: the fp32 value rounded once, so within one bf16 step (2^-8 relative) of it
            step = (e16[name].float() - want[name]).abs() / want[name].abs().clamp_min(1e-30)
            worst16 = max(worst16, step.max().item())
            naive_gap = min(naive_gap, rel(e32[name], naive[name]))
    for name, t in b.items():
        if name not in want and not torch.equal(e32[name], t.float()):
            bad.append(f"{name} is not the base's")
    if set(e32) != set(b) or set(e16) != set(b):
        bad.append(f"tensor names differ from the base's: {sorted(set(e32) ^ set(b))}")
    print(f"  merged linears vs dequant(quant(W)) + s*B*A: fp32 {worst32:.2e}, bf16 {worst16:.2e} (of the value); "
          f"the unquantized fold W + s*B*A is {naive_gap:.2e} away (nearest linear)")
    if worst32 > 1e-6:
        bad.append(f"fp32 merge off by {worst32:.2e}")
    if worst16 > 2.0 ** -7:
        bad.append(f"bf16 merge off by more than one bf16 step ({worst16:.2e})")
    if naive_gap <= 1e-2:
        bad.append(f"the merge is as near the unquantized fold ({naive_gap:.2e}): the test cannot tell them apart")
    ref = read_ref(ref_path, tokens)
    l32, l16 = logits_of(m32, tokens), logits_of(m16, tokens)
    lnaive = logits_of(base, tokens, {k: v for k, v in naive.items()})
    r32, r16, rnaive = rel(l32, ref), rel(l16, ref), rel(lnaive, ref)
    print(f"  logits vs ranktune's 4-bit model: merged fp32 {r32:.2e}, merged bf16 {r16:.2e}, "
          f"unquantized fold {rnaive:.2e}")
    if r32 > 1e-5:
        bad.append(f"merged fp32 logits off by {r32:.2e}")
    if r16 > 2e-2:
        bad.append(f"merged bf16 logits off by {r16:.2e}")
    if rnaive <= 1e-4:
        bad.append(f"the unquantized fold gives ranktune's logits too ({rnaive:.2e}): the test cannot fail")
    for b_ in bad:
        print("  " + b_)
    return 0 if not bad else 1


def peft_logits(adapter, base, ref_path, tokens):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    torch.set_num_threads(1)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=quant, device_map="cpu",
                                                 dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(model, adapter)
    # Training mode with every dropout off: in eval mode bnb's CPU Linear4bit repacks the weight for an approximate
    # (bf16) kernel, 1.7e-3 off its own dequantize-then-matmul, which is the path QLoRA training takes.
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    with torch.no_grad():
        got = model(torch.tensor([tokens])).logits[0].float()
    r = rel(got, read_ref(ref_path, tokens))
    print(f"  peft + bitsandbytes 4-bit base vs ranktune: {r:.2e}")
    return 0 if r <= 1e-4 else 1


def bnb_dir(base, out):
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    torch.set_num_threads(1)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=quant, device_map="cpu",
                                                 dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    whole = os.path.join(out, "model.safetensors")
    t = load_file(whole)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert q + ".absmax" in t, "not a bitsandbytes 4-bit save"
    names = sorted(t)
    first = {n for i, n in enumerate(names) if (n == q) or (not n.startswith(q) and i % 2 == 0)}
    shards = {"model-00001-of-00002.safetensors": {n: t[n] for n in names if n in first},
              "model-00002-of-00002.safetensors": {n: t[n] for n in names if n not in first}}
    for file, part in shards.items():
        save_file({k: v.contiguous() for k, v in part.items()}, os.path.join(out, file), metadata={"format": "pt"})
    json.dump({"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}},
              open(os.path.join(out, "model.safetensors.index.json"), "w"), indent=2)
    os.remove(whole)
    return 0


def main(argv):
    cmd = argv[1]
    if cmd == "deps":
        return deps()
    if cmd == "merged":
        return merged(*argv[2:7], [int(x) for x in argv[7:]])
    if cmd == "peft":
        return peft_logits(*argv[2:5], [int(x) for x in argv[5:]])
    if cmd == "bnb":
        return bnb_dir(argv[2], argv[3])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
