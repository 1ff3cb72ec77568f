#!/usr/bin/env python3
"""Builds tests/reference/fixtures/llama_packed/ (committed; rerun to regenerate): attention over packed rows.

A tiny random-init Llama (GQA, fp32, saved by transformers as a real HF directory) and reference.safetensors with a
batch of 2 packed rows of T=16 in ranktune's row layout: 3 documents in row 0, 2 documents and padding in row 1,
position ids restarting at 0 at every document (the padding too), one document with an untrained prompt.

- `labels`: transformers' labels for such a batch, as DataCollatorWithFlattening makes them: the document's tokens,
  -100 at each document's first token (nothing predicts a document from the one before), at the prompt and padding.
  `targets` are the same labels pre-shifted (targets[t] = labels[t + 1]), ranktune's layout.
- `documents`: the document index of each token, transformers' find_packed_sequence_indices(position_ids).
- isolated (`logits`, `loss`, `grad.*`): LlamaForCausalLM given position_ids, no attention_mask and no cache, which
  makes transformers build the block-diagonal causal mask of packed sequences (eager attention, fp32, CPU). Checked here
  against each document run alone (`logits` equals the concatenation within 1e-5): isolation is "as if trained alone".
- shared (`shared_logits`, `shared_loss`): the same with attention_mask = ones, which turns packed-sequence
  detection off: plain causal attention over the whole row, ranktune's behaviour before data.packing_attention.

Needs: torch, transformers, safetensors. CI never runs this.
Usage: python3 tests/reference/make_packed_fixture.py [--out tests/reference/fixtures]
"""
import argparse
import os
import shutil

import safetensors
import safetensors.torch
import torch
import transformers
from transformers.masking_utils import find_packed_sequence_indices

T = 16
PAD = 0
# Per row: (document length, untrained prompt tokens) ...; the rest of the row is padding.
ROWS = [[(5, 0), (7, 2), (4, 0)], [(6, 0), (5, 0)]]
GRADS = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
         "model.layers.1.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight", "lm_head.weight"]


def make_model(seed):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
        bos_token_id=1, eos_token_id=2, pad_token_id=None, tie_word_embeddings=False)
    config._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # norms are ones at init: randomise them so that a wrong mapping cannot hide
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    return model


def packed_batch(seed):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.full((len(ROWS), T), PAD, dtype=torch.long)
    labels = torch.full((len(ROWS), T), -100, dtype=torch.long)
    position_ids = torch.zeros((len(ROWS), T), dtype=torch.long)
    spans = []  # (row, start, length)
    for r, docs in enumerate(ROWS):
        at = 0
        for n, prompt in docs:
            ids = torch.randint(3, 96, (n,), generator=g)
            ids[0], ids[-1] = 1, 2  # bos ... eos
            input_ids[r, at:at + n] = ids
            labels[r, at + 1 + prompt:at + n] = ids[1 + prompt:]
            position_ids[r, at:at + n] = torch.arange(n)
            spans.append((r, at, n))
            at += n
        position_ids[r, at:] = torch.arange(T - at)
    targets = torch.full_like(labels, -100)
    targets[:, :-1] = labels[:, 1:]
    return input_ids, labels, targets, position_ids, spans


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    model = make_model(seed=310)
    input_ids, labels, targets, position_ids, spans = packed_batch(seed=311)
    documents = find_packed_sequence_indices(position_ids)
    assert documents is not None and documents[:, -1].tolist() == [2, 2]

    # use_cache=False: with a cache (the default, even without past tokens) transformers skips the packing detection.
    out = model(input_ids=input_ids, labels=labels, position_ids=position_ids, use_cache=False)
    out.loss.backward()
    params = dict(model.named_parameters())
    with torch.no_grad():
        alone = torch.zeros_like(out.logits)
        for r, start, n in spans:
            alone[r, start:start + n] = model(input_ids=input_ids[r:r + 1, start:start + n]).logits[0]
        for r, docs in enumerate(ROWS):  # the padding is a document of its own too
            used = sum(n for n, _ in docs)
            if used < T:
                alone[r, used:] = model(input_ids=input_ids[r:r + 1, used:]).logits[0]
        err = ((out.logits - alone).norm() / alone.norm()).item()
        assert err < 1e-5, f"packed with position_ids is not isolation: {err}"
        shared = model(input_ids=input_ids, labels=labels, position_ids=position_ids,
                       attention_mask=torch.ones_like(input_ids), use_cache=False)
        differ = ((shared.logits - out.logits).norm() / out.logits.norm()).item()
        assert differ > 1e-3, f"the document mask changed nothing: {differ}"

    tensors = {
        "input_ids": input_ids, "labels": labels, "targets": targets, "position_ids": position_ids,
        "documents": documents.to(torch.long).contiguous(),
        "logits": out.logits.detach().float().contiguous(), "loss": out.loss.detach().float().reshape(()),
        "shared_logits": shared.logits.float().contiguous(), "shared_loss": shared.loss.float().reshape(()),
    }
    for name in GRADS:
        tensors["grad." + name] = params[name].grad.detach().float().contiguous()

    out_dir = os.path.join(args.out, "llama_packed")
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    gen = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__,
            "description": "2 packed rows of 16: documents 5+7+4 and 6+5+padding, isolated and shared attention",
            "grad_names": ",".join(sorted(GRADS)),
            "isolated_vs_alone_rel_err": f"{err:.3g}", "shared_vs_isolated_rel_diff": f"{differ:.3g}"}
    safetensors.torch.save_file(tensors, os.path.join(out_dir, "reference.safetensors"), metadata=meta)
    print(f"loss isolated {out.loss.item():.6f}, shared {shared.loss.item():.6f}; isolated vs alone {err:.3g}")


if __name__ == "__main__":
    main()
