#!/usr/bin/env python3
"""Builds tests/reference/fixtures/nf4/cases.safetensors (committed; rerun to regenerate): NF4 quantizations made by
bitsandbytes on CPU, for tests/kernels/test_nf4.cpp to compare ranktune's quantizer and dequantizer with, byte for byte.

For every case `c` the file holds `c.input` (the weight, bf16/fp16/fp32) and, under the names transformers saves for a
"...-bnb-4bit" checkpoint, what `bitsandbytes.functional.quantize_4bit(input, blocksize=64, quant_type="nf4",
compress_statistics=True)` returns: `c.weight` (packed uint8), `c.weight.absmax`, `c.weight.quant_map`,
`c.weight.nested_absmax`, `c.weight.nested_quant_map`, `c.weight.quant_state.bitsandbytes__nf4` (the JSON bytes).
`c.dequant` is bnb's dequantization in the input's dtype, `c.block_absmax` the per-block absmax it scales by (float32).
`linear.*` is one forward and backward of bnb's Linear4bit (the layer PEFT puts LoRA on for QLoRA), for
tests/model/test_nf4_linear.cpp.

The dequantization reference is bnb's default-backend computation (flat blocks of 64 over the whole tensor, as its
CUDA kernel does). bnb's native CPU kernel agrees with it wherever the last dimension is a multiple of 64 (asserted
here); on AVX-512 machines it indexes absmax per row and so differs for other shapes, and it returns 1-D shapes as
[1, n]: those are bnb CPU defects, not the format.
The offset of the double quantization is a float32 torch mean: for more than 32768 blocks it depends in its last bit on
torch's thread count (bnb's own results do too), so this script runs torch on one thread and the cases stay smaller.

Reruns reproduce every tensor bit for bit; only the order of the safetensors metadata keys may change.
Needs: torch, safetensors, bitsandbytes==0.50.2 (its CPU backend; no GPU). CI never runs this.
Usage: python3 tests/reference/make_nf4_fixtures.py [--out tests/reference/fixtures/nf4]
"""
import argparse
import json
import os

import bitsandbytes as bnb
import bitsandbytes.functional as F
import safetensors
import safetensors.torch
import torch
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

HERE = os.path.dirname(os.path.abspath(__file__))
NF4 = F.get_4bit_type("nf4", device="cpu")


def ties(dtype):
    # Every NF4 decision boundary exactly (absmax 1 makes the scaled value the value itself), one ulp either side,
    # and the code values themselves: bnb's nearest-code rule must break each tie the same way.
    mids = ((NF4[:-1] + NF4[1:]) / 2).to(dtype).float()
    up = torch.nextafter(mids, torch.full_like(mids, 2.0))
    down = torch.nextafter(mids, torch.full_like(mids, -2.0))
    vals = torch.cat([torch.tensor([1.0, -1.0]), mids, up, down, NF4])
    vals = torch.cat([vals, torch.zeros(128 - vals.numel())])
    return vals.to(dtype).reshape(2, 64)


def division_probes(m):
    # Values near the code midpoints times m for which x / m and x * (1 / m) fall on different sides of a midpoint:
    # bnb scales whole blocks by the reciprocal and a last partial block by division, and both must be followed.
    mids = (NF4[:-1] + NF4[1:]) / 2
    m = torch.tensor([m], dtype=torch.float32)
    found = []
    for k in range(15):
        base = (mids[k] * m).float()
        near = [base]
        for direction in (10.0, -10.0):
            x = base
            for _ in range(20):
                x = torch.nextafter(x, torch.tensor([direction]))
                near.append(x)
        xs = torch.cat(near)
        a = torch.bucketize(torch.clamp(xs / m, -1, 1), mids)
        b = torch.bucketize(torch.clamp(xs * m.reciprocal(), -1, 1), mids)
        found += xs[a != b].tolist()
    return torch.tensor([m.item()] + found, dtype=torch.float32)


def nested_probe(g):
    # 128 blocks whose absmaxes sit around 1 so that, centred on their mean, they land where bnb's CPU table and the
    # exact nearest code disagree: on the dynamic map's midpoints and in its dense part near zero. A quantizer that
    # rounds to the nearest code instead of through the table gets some of these bytes wrong (asserted in main).
    dyn = F.create_dynamic_map()
    mids = ((dyn[:-1] + dyn[1:]) / 2)[torch.arange(0, 255, 9)]
    t = torch.cat([torch.tensor([1.0]), torch.logspace(-6.5, -2, 21), mids[mids > 0][:10]])
    t = torch.cat([t, torch.rand(64 - t.numel(), generator=g)])
    t = torch.cat([t, -t])
    absmax = 1 + t
    rest = (torch.rand(128, 63, generator=g) * 2 - 1) * absmax.view(-1, 1)
    return torch.cat([absmax.view(-1, 1), rest], 1).float()


def cases():
    g = torch.Generator().manual_seed(20261206)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    out = {}
    for dt, tag in ((torch.bfloat16, "bf16"), (torch.float16, "fp16"), (torch.float32, "fp32")):
        out[f"rand_{tag}_4x128"] = randn(4, 128).to(dt)
        out[f"rand_{tag}_3x50"] = randn(3, 50).to(dt)  # odd: blocks cross rows, a partial last block
        out[f"rand_{tag}_5x33"] = randn(5, 33).to(dt)  # odd numel: a padding nibble
        out[f"rand_{tag}_16x80"] = randn(16, 80).to(dt)
        out[f"rand_{tag}_7"] = randn(7).to(dt)
        out[f"ties_{tag}"] = ties(dt)
    out["rand_bf16_65"] = randn(65).to(torch.bfloat16)
    out["rand_bf16_1x64"] = randn(1, 64).to(torch.bfloat16)
    out["rand_bf16_2x3x64"] = randn(2, 3, 64).to(torch.bfloat16)
    # 260 and 257 blocks: several nested blocks of 256, the last one partial.
    out["rand_bf16_4x4160"] = randn(4, 4160).to(torch.bfloat16)
    out["rand_fp16_257x64"] = randn(257, 64).to(torch.float16)
    # Heavy tails: block absmaxes far apart, so the nested code's whole range is used.
    out["heavy_fp32_96x64"] = (randn(96, 64) * torch.exp(randn(96, 1) * 2)).float()
    scales = (1.3379325866699219, 1.7092077732086182)
    blocks = [torch.nn.functional.pad(division_probes(m), (0, 64))[:64] for m in scales]
    tail = division_probes(2.7040534019470215)
    assert tail.numel() < 64
    out["division_fp32"] = torch.cat(blocks + [tail])
    out["nested_probe_fp32"] = nested_probe(g)
    out["zeros_bf16_4x128"] = torch.zeros(4, 128, dtype=torch.bfloat16)
    # A zero block inside (its absmax stays 0) and a zero tail (bnb clamps a partial block's absmax to 1e-38).
    out["zero_blocks_fp32_164"] = torch.cat([randn(64), torch.zeros(64), torch.zeros(36)]).float()
    equal = randn(4, 64)
    equal[1] = 0.75
    equal[2] = -3.0
    out["equal_block_bf16_4x64"] = equal.to(torch.bfloat16)
    out["large_fp32_8x64"] = randn(8, 64, scale=1e30).float()
    out["large_bf16_8x64"] = randn(8, 64, scale=1e30).to(torch.bfloat16)
    out["small_fp32_8x64"] = randn(8, 64, scale=1e-30).float()
    out["small_fp16_8x64"] = randn(8, 64, scale=1e-6).to(torch.float16)  # fp16 subnormals
    out["mixed_scale_bf16_16x64"] = (randn(16, 64) * torch.logspace(-8, 8, 16).view(16, 1)).to(torch.bfloat16)
    # A real weight of a committed fixture model, as it is (fp32) and in bf16.
    model = safetensors.torch.load_file(os.path.join(HERE, "fixtures", "llama_gqa_untied", "model.safetensors"))
    w = model["model.layers.0.mlp.down_proj.weight"]
    out["model_down_proj_fp32"] = w.clone()
    out["model_down_proj_bf16"] = w.to(torch.bfloat16)
    out["model_k_proj_bf16"] = model["model.layers.1.self_attn.k_proj.weight"].to(torch.bfloat16)
    return out


def quantize_case(name, x):
    q, st = F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
    block_absmax = F.dequantize_blockwise(st.absmax, st.state2) + st.offset
    ref = _dequantize_4bit_compute.__wrapped__(q.reshape(-1), block_absmax.float(), NF4, 64, st.shape, x.dtype)
    native = F.dequantize_4bit(q, st)
    if x.shape[-1] % 64 == 0:
        assert torch.equal(native, ref), f"{name}: bnb's CPU kernel and its reference disagree"
    elif not torch.equal(native.reshape(ref.shape), ref):
        print(f"note: {name}: bnb's native CPU dequantization differs (rows not a multiple of 64); reference kept")
    tensors = {f"{name}.input": x, f"{name}.weight": q, f"{name}.dequant": ref, f"{name}.block_absmax": block_absmax}
    for k, v in st.as_dict(packed=True).items():
        tensors[f"{name}.weight.{k}"] = v
    return tensors


def linear_case(g):
    # bitsandbytes' Linear4bit (what PEFT wraps for QLoRA) forward and backward on CPU, bf16: x [2, 5, 128] through a
    # [48, 128] NF4 weight with a bias; dy the incoming gradient. Keys "linear.*" (not in the "cases" list).
    w = torch.randn(48, 128, generator=g).to(torch.bfloat16)
    bias = torch.randn(48, generator=g).to(torch.bfloat16)
    layer = bnb.nn.Linear4bit(128, 48, bias=True, compute_dtype=torch.bfloat16, compress_statistics=True,
                              quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(w.clone(), requires_grad=False, quant_type="nf4", compress_statistics=True,
                                     blocksize=64)
    layer.bias = torch.nn.Parameter(bias.clone())
    layer = layer.to("cpu")
    q, _ = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    assert torch.equal(layer.weight.data, q), "Linear4bit quantized differently from quantize_4bit"
    x = torch.randn(2, 5, 128, generator=g).to(torch.bfloat16).requires_grad_(True)
    dy = torch.randn(2, 5, 48, generator=g).to(torch.bfloat16)
    y = layer(x)
    y.backward(dy)
    return {"linear.weight": w, "linear.bias": bias, "linear.x": x.detach(), "linear.dy": dy, "linear.y": y.detach(),
            "linear.dx": x.grad}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "fixtures", "nf4"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    tensors = {}
    all_cases = cases()
    for name, x in all_cases.items():
        tensors.update(quantize_case(name, x))
    _, st = F.quantize_4bit(all_cases["nested_probe_fp32"], blocksize=64, quant_type="nf4", compress_statistics=True)
    absmax = all_cases["nested_probe_fp32"].abs().amax(1)
    centred = absmax - absmax.mean()
    nearest = (centred.view(-1, 1) / centred.abs().max() - F.create_dynamic_map().view(1, -1)).abs().argmin(1)
    assert (nearest != st.absmax.long()).sum() >= 3, "nested_probe_fp32 no longer separates table from nearest code"
    tensors.update(linear_case(torch.Generator().manual_seed(18)))
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    meta = {
        "cases": ",".join(all_cases),
        "versions": json.dumps({"torch": torch.__version__, "bitsandbytes": bnb.__version__,
                                "safetensors": safetensors.__version__}, sort_keys=True),
    }
    path = os.path.join(args.out, "cases.safetensors")
    safetensors.torch.save_file(tensors, path, metadata=meta)
    print(f"wrote {path}: {len(all_cases)} cases, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
