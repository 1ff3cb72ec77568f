#!/usr/bin/env python3
"""Builds tests/reference/fixtures/bnb4_tiny/ (committed; rerun to regenerate): a "...-bnb-4bit" model directory as
transformers + bitsandbytes write it, for tests/model/test_bnb_checkpoint.cpp and the QLoRA loader.

A tiny random Llama (hidden 64, FFN 128, 2 layers, 4 heads / 2 KV heads, vocab 96, untied head; every decoder linear's
in_features a multiple of 64) is saved in bf16, loaded back by transformers with
BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True) on the CPU (bnb's
CPU backend quantizes there: no GPU needed) and written with save_pretrained: config.json with its
quantization_config, model.safetensors with each decoder linear as `weight` (packed uint8), `weight.absmax`,
`weight.quant_map`, `weight.nested_absmax`, `weight.nested_quant_map`, `weight.quant_state.bitsandbytes__nf4`;
embeddings, norms and lm_head stay bf16.

reference.safetensors beside it holds, for every decoder linear `<name>` (e.g. model.layers.0.self_attn.q_proj):
`source.<name>` the bf16 weight before quantization, `dequant.<name>` bitsandbytes' own dequantize_4bit of the saved
state (bf16), and `input_ids` / `logits` (float32) of transformers' forward on the quantized model (bf16 compute, CPU),
`logits_fp32` of transformers' fp32 eager forward over those dequantized weights (bnb's fp32 matmul_4bit rounds the
dequantized weight to the state's dtype first), `logits_fp32_unrounded` over the same dequantization done in fp32,
and `logits_unquantized` over the bf16 weights before quantization (what a loader that ignored the 4-bit state would
come near). The decoder's weights are drawn 8x transformers' init so that they, not the embedding, shape the logits.

Reruns reproduce every tensor bit for bit (torch on one thread); only the order of safetensors metadata keys may change.

With --device given, it writes a parity fixture instead, for the test BnbCheckpointGpu (pointed at it by
RANKTUNE_BNB4_FIXTURE_DIR; bench/qlora_gpu_parity.sh runs both on the GPU machine): the same model quantized by
transformers + bitsandbytes on that device (`--device cuda`: bnb's CUDA quantizer) and saved to --out, `logits` of
transformers' bf16 forward on that device over it, and `logits_committed`: the same forward over the committed
directory (its absolute path in the metadata as `committed_dir`), loaded as it is onto the device. The fp32 references
stay CPU computations. bnb's dequantization on the device is checked against its reference computation and, unlike the
committed fixture's run, a difference is printed rather than fatal: the C++ test then shows it too.
Needs: torch, transformers, safetensors, bitsandbytes==0.50.2. CI never runs this.
Usage: python3 tests/reference/make_bnb4_fixture.py [--out DIR] [--device cpu|cuda]
"""
import argparse
import json
import os
import shutil
import tempfile

import bitsandbytes as bnb
import bitsandbytes.functional as F
import safetensors
import safetensors.torch
import torch
import transformers
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

HERE = os.path.dirname(os.path.abspath(__file__))
COMMITTED = os.path.join(HERE, "fixtures", "bnb4_tiny")
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj"]


def versions():
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": bnb.__version__,
        "safetensors": safetensors.__version__,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(HERE, "fixtures", "bnb4_tiny"))
    parser.add_argument("--device", choices=["cpu", "cuda"], help="a parity fixture quantized and run on this device")
    args = parser.parse_args()
    parity = args.device is not None
    if parity and os.path.abspath(args.out) == COMMITTED:
        parser.error("--device writes a parity fixture: give it its own --out, not the committed directory")
    device = args.device or "cpu"
    torch.set_num_threads(1)
    torch.manual_seed(1818)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=None,
                                      tie_word_embeddings=False, rope_theta=10000.0)
    model = transformers.LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # HF initialises norms to one; randomise them so that a wrong mapping cannot hide
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.startswith("model.layers."):  # std 0.16, not 0.02: the decoder shapes the logits
                p.mul_(8.0)
    model.to(torch.bfloat16)
    source = {n: p.detach().clone() for n, p in model.named_parameters()}

    quant = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                            bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        qmodel = transformers.LlamaForCausalLM.from_pretrained(tmp, quantization_config=quant, device_map=device,
                                                               dtype=torch.bfloat16)
    qmodel.eval()
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    qmodel.save_pretrained(args.out, safe_serialization=True)
    gen = os.path.join(args.out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)

    tensors = {}
    modules = dict(qmodel.named_modules())
    for i in range(config.num_hidden_layers):
        for lin in LINEARS:
            name = f"model.layers.{i}.{lin}"
            layer = modules[name]
            assert isinstance(layer, bnb.nn.Linear4bit), name
            w, state = layer.weight, layer.weight.quant_state
            assert state.quant_type == "nf4" and state.blocksize == 64 and state.nested, name
            deq = F.dequantize_4bit(w.data, state)
            # bnb's flat-block reference computation must agree with its CPU kernel for these shapes (in % 64 == 0).
            block_absmax = (F.dequantize_blockwise(state.absmax, state.state2) + state.offset).float()
            flat = _dequantize_4bit_compute.__wrapped__(w.data.reshape(-1), block_absmax, state.code, 64, state.shape,
                                                        state.dtype)
            if not parity:
                assert torch.equal(deq, flat), name
            elif not torch.equal(deq, flat):
                print(f"{name}: bnb's {device} dequantize_4bit differs from its reference in "
                      f"{int((deq != flat).sum())} of {deq.numel()} elements")
            # The same dequantization in fp32, not rounded to the state's dtype (bf16); before any forward, which
            # may repack the weight for bnb's CPU kernels.
            tensors["dequant32." + name] = _dequantize_4bit_compute.__wrapped__(w.data.reshape(-1), block_absmax,
                                                                               state.code, 64, state.shape,
                                                                               torch.float32).cpu()
            tensors["source." + name] = source[name + ".weight"].contiguous()
            tensors["dequant." + name] = deq.cpu().contiguous()

    g = torch.Generator().manual_seed(77)
    input_ids = torch.randint(3, config.vocab_size, (2, 12), generator=g)
    with torch.no_grad():
        logits = qmodel(input_ids=input_ids.to(device)).logits.cpu()
        if parity:
            committed = transformers.LlamaForCausalLM.from_pretrained(COMMITTED, device_map=device,
                                                                      dtype=torch.bfloat16).eval()
            logits_committed = committed(input_ids=input_ids.to(device)).logits.float().cpu().contiguous()
        # fp32 references: the same model over bnb's dequantized weights, and over the weights before quantization.
        config._attn_implementation = "eager"
        for key, weights in (("logits_fp32", "dequant."), ("logits_fp32_unrounded", "dequant32."),
                             ("logits_unquantized", "source.")):
            plain = transformers.LlamaForCausalLM(config).float().eval()
            state = {n: p.float() for n, p in source.items()}
            for i in range(config.num_hidden_layers):
                for lin in LINEARS:
                    name = f"model.layers.{i}.{lin}"
                    state[name + ".weight"] = tensors[weights + name].float()
            plain.load_state_dict(state)
            tensors[key] = plain(input_ids=input_ids).logits.float().contiguous()
    for name in [k for k in tensors if k.startswith("dequant32.")]:
        del tensors[name]  # rebuilt from the file by any reader; only the logits are kept
    tensors["input_ids"] = input_ids
    tensors["logits"] = logits.float().contiguous()
    meta = dict(versions())
    meta["description"] = "bitsandbytes NF4 (double quant) tiny Llama saved by transformers on CPU"
    if parity:
        tensors["logits_committed"] = logits_committed
        meta.update({"device": device, "dtype": "bfloat16", "committed_dir": COMMITTED,
                     "description": f"bitsandbytes NF4 (double quant) tiny Llama quantized and saved by transformers "
                                    f"on {device}, bf16 compute"})
        if device == "cuda":
            meta["gpu"] = torch.cuda.get_device_name(0)
    safetensors.torch.save_file(tensors, os.path.join(args.out, "reference.safetensors"), metadata=meta)
    with open(os.path.join(args.out, "config.json")) as f:
        print(json.dumps(json.load(f)["quantization_config"], indent=2))


if __name__ == "__main__":
    main()
