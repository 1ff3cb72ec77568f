#!/usr/bin/env python3
"""Checks `ranktune export --export.format=gguf` files with the gguf package (llama.cpp's own gguf-py), driven by
tests/integration/export_gguf.sh.

  check_gguf.py deps                           exit 77 (skip) when gguf, numpy or transformers is missing
  check_gguf.py bases OUT                      small random models saved by transformers: OUT/llama (llama3 rope
                                               scaling, a byte-level BPE trained by `tokenizers` with bos/eos/pad and
                                               a chat template in tokenizer_config.json), OUT/qwen2 (q/k/v biases, tied
                                               embeddings) and OUT/mistral (a 128-token sliding window of 256
                                               positions), the last two with the same tokenizer
  check_gguf.py tensors GGUF DTYPE HF32 [HF]   every tensor gguf.GGUFReader reads from GGUF against the HF export of
                                               the same checkpoint (HF32: fp32; HF: in DTYPE): names as gguf's own
                                               TensorNameMap gives them; 1-D tensors F32 equal to HF32's; matrices, Q/K
                                               rows unpermuted (llama architecture), bit-equal to HF's for bf16/fp16
                                               and to HF32's for fp32; q8_0: blocks byte-equal to gguf.quants.quantize
                                               of HF32's weights (Q/K rows permuted as convert_hf_to_gguf.py does),
                                               dequantized within half a step plus fp16 rounding of the scale; rows
                                               Q8_0 cannot hold as F16 equal to HF32's rounded
  check_gguf.py meta GGUF DTYPE HF32           the keys llama.cpp's loader reads, with the types it insists on and
                                               HF32's config.json values; general.file_type; 32-byte alignment of the
                                               data; rope_freqs (llama3 rope) against the llama3 rule; output.weight
                                               present exactly when the embeddings are not tied
  check_gguf.py vocab GGUF byte|MODEL_DIR      the tokenizer keys: the byte tokenizer as GPT-2's 256 byte symbols
                                               (transformers' bytes_to_unicode) without merges; a model directory's
                                               tokenizer as transformers' AutoTokenizer has it (tokens, token types,
                                               merges, bos/eos/pad ids, add_bos_token, chat template)
  check_gguf.py tokens TOOL GGUF CASES|byte [KNOWN]
                                               llama.cpp (TOOL: llama_cpp_gguf) tokenizes the texts of a tokenizer
                                               fixture's cases as HF tokenizers did, with and without bos; texts may
                                               differ only for the KNOWN reason (none, nfc, space, added)
  check_gguf.py logits REF.f32 GOT.f32 TOL     llama.cpp's logits within TOL of ranktune's (relative to the largest)
"""
import importlib.util
import json
import math
import os
import struct
import sys
import unicodedata

FILE_TYPE = {"fp32": 0, "fp16": 1, "q8_0": 7, "bf16": 32}


def deps():
    missing = [m for m in ("gguf", "numpy", "transformers", "tokenizers") if importlib.util.find_spec(m) is None]
    if missing:
        print("SKIP: python packages missing: " + ", ".join(missing) + " (scripts/setup.sh installs them)")
        return 77
    return 0


from hf_tiny_tokenizer import CHAT, CORPUS, tiny_tokenizer


def bases(out):
    import torch
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)
    fast = tiny_tokenizer()
    shape = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                 bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64, "rope_theta": 10000.0}
    made = [("llama", LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False, rope_scaling=llama3))),
            ("qwen2", Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=True, use_sliding_window=False))),
            ("mistral", MistralForCausalLM(MistralConfig(**shape, tie_word_embeddings=False, sliding_window=128)))]
    for name, model in made:
        torch.manual_seed(0)
        d = os.path.join(out, name)
        fast.save_pretrained(d)
        path = os.path.join(d, "tokenizer_config.json")
        config = json.load(open(path))
        config["chat_template"] = CHAT
        json.dump(config, open(path, "w"), indent=2)
        if os.path.exists(os.path.join(d, "chat_template.jinja")):
            os.remove(os.path.join(d, "chat_template.jinja"))
        with torch.no_grad():  # transformers 5 may leave some weights as allocated: make every one a real value
            for p in model.parameters():
                p.normal_(0, 0.1) if p.dim() > 1 else p.uniform_(0.5, 1.5)
        model.to(torch.float32).save_pretrained(d, safe_serialization=True)
    return 0


def safetensors(directory):
    """name -> numpy array (bf16 as its uint16 bits), read by hand so that bf16 needs no torch."""
    import numpy as np
    with open(os.path.join(directory, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    kinds = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    out = {}
    for name, info in header.items():
        if name != "__metadata__":
            a, b = info["data_offsets"]
            out[name] = np.frombuffer(data[a:b], dtype=kinds[info["dtype"]]).reshape(info["shape"])
    return out


def config_of(hf32):
    c = json.load(open(os.path.join(hf32, "config.json")))
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    c["_theta"] = c.get("rope_theta", rope.get("rope_theta", 10000.0))
    c["_rope"] = rope if rope.get("rope_type", rope.get("type")) == "llama3" else None
    c["_head_dim"] = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    c["_arch"] = "qwen2" if c["model_type"] == "qwen2" else "llama"
    return c


def permute(w, heads):  # transformers' rotary row order -> llama.cpp's, as convert_hf_to_gguf.py's LlamaModel.permute
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, heads):
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def name_map(c):
    import gguf
    arch = gguf.MODEL_ARCH.QWEN2 if c["_arch"] == "qwen2" else gguf.MODEL_ARCH.LLAMA
    return gguf.get_tensor_name_map(arch, c["num_hidden_layers"])


def tensors(path, dtype, hf32, hf=None):
    import gguf
    import numpy as np
    c = config_of(hf32)
    reader = gguf.GGUFReader(path)
    ref32 = safetensors(hf32)
    ref = safetensors(hf) if hf else None
    tmap = name_map(c)
    want = {tmap.get_name(n, try_suffixes=(".weight", ".bias")): n for n in ref32}
    got = {t.name: t for t in reader.tensors}
    bad = []
    if set(got) - {"rope_freqs.weight"} != set(want):
        bad.append(f"tensor names {sorted(set(got) ^ set(want))} differ from gguf's TensorNameMap of the HF names")
    counts = {}
    for name, hf_name in want.items():
        t = got.get(name)
        if t is None:
            continue
        w32 = ref32[hf_name]
        heads = None
        if c["_arch"] == "llama" and ".attn_q." in name:
            heads = c["num_attention_heads"]
        if c["_arch"] == "llama" and ".attn_k." in name:
            heads = c["num_key_value_heads"]
        kind = t.tensor_type.name
        counts[kind] = counts.get(kind, 0) + 1
        shape = tuple(reversed([int(d) for d in t.shape]))
        if shape != w32.shape:
            bad.append(f"{name}: shape {shape}, HF {w32.shape}")
            continue
        if w32.ndim == 1 or dtype == "fp32":
            ok = kind == "F32" and np.array_equal(t.data.reshape(shape), permute(w32, heads) if heads else w32)
        elif kind == "Q8_0":
            q = permute(w32, heads) if heads else w32
            ours = np.asarray(t.data)
            theirs = gguf.quants.quantize(q, gguf.GGMLQuantizationType.Q8_0)
            deq = gguf.quants.dequantize(ours, gguf.GGMLQuantizationType.Q8_0).reshape(shape)
            blocks = np.abs(q.reshape(-1, 32)).max(axis=1, keepdims=True)
            tol = (blocks / 127 * 0.5 + blocks * 2.0 ** -11 + 1e-12).repeat(32, axis=1).reshape(shape)
            ok = dtype == "q8_0" and np.array_equal(ours, theirs) and bool((np.abs(deq - q) <= tol).all())
        elif kind == "F16" and dtype == "q8_0":  # a row Q8_0 cannot hold: F16, as the converter falls back
            ok = shape[-1] % 32 != 0 and np.array_equal(t.data.reshape(shape), w32.astype(np.float16))
        else:
            mine = np.ascontiguousarray(t.data).view(np.uint16 if kind == "BF16" else np.float16).reshape(shape)
            mine = unpermute(mine, heads) if heads else mine
            ok = kind == {"bf16": "BF16", "fp16": "F16"}[dtype] and np.array_equal(mine, ref[hf_name])
        if not ok:
            bad.append(f"{name} ({kind}) differs from {hf_name} of the {dtype} export")
    print(f"  {path}: {len(got)} tensors {counts}" + "".join("\n  " + b for b in bad[:10]))
    return 0 if not bad and got else 1


def meta(path, dtype, hf32):
    import gguf
    import numpy as np
    from gguf import GGUFValueType as T
    c = config_of(hf32)
    reader = gguf.GGUFReader(path)
    arch = c["_arch"]
    context = c["max_position_embeddings"]
    if c.get("sliding_window"):
        context = min(context, c["sliding_window"])
    want = {  # key: (type llama.cpp requires, value)
        "general.architecture": (T.STRING, arch),
        "general.file_type": (T.UINT32, FILE_TYPE[dtype]),
        "general.alignment": (T.UINT32, 32),
        f"{arch}.context_length": (T.UINT32, context),
        f"{arch}.embedding_length": (T.UINT32, c["hidden_size"]),
        f"{arch}.block_count": (T.UINT32, c["num_hidden_layers"]),
        f"{arch}.feed_forward_length": (T.UINT32, c["intermediate_size"]),
        f"{arch}.attention.head_count": (T.UINT32, c["num_attention_heads"]),
        f"{arch}.attention.head_count_kv": (T.UINT32, c["num_key_value_heads"]),
        f"{arch}.attention.layer_norm_rms_epsilon": (T.FLOAT32, float(np.float32(c["rms_norm_eps"]))),
        f"{arch}.rope.freq_base": (T.FLOAT32, float(np.float32(c["_theta"]))),
        f"{arch}.rope.dimension_count": (T.UINT32, c["_head_dim"]),
        f"{arch}.vocab_size": (T.UINT32, c["vocab_size"]),
        "tokenizer.ggml.model": (T.STRING, None),
    }
    bad = []
    for key, (kind, value) in want.items():
        f = reader.fields.get(key)
        if f is None:
            bad.append(f"{key} missing")
        elif f.types[0] != kind:
            bad.append(f"{key} is {f.types[0].name}, llama.cpp reads {kind.name}")
        elif value is not None and f.contents() != value:
            bad.append(f"{key} = {f.contents()!r}, want {value!r}")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None or len(tokens.data) != c["vocab_size"]:
        bad.append(f"tokenizer.ggml.tokens: {None if tokens is None else len(tokens.data)} tokens, want "
                   f"{c['vocab_size']}")
    if reader.data_offset % 32 or any(t.data_offset % 32 for t in reader.tensors):
        bad.append("tensor data not aligned to 32 bytes")
    names = {t.name: t for t in reader.tensors}
    if ("output.weight" in names) == bool(c.get("tie_word_embeddings")):
        bad.append(f"output.weight {'present' if 'output.weight' in names else 'absent'} with "
                   f"tie_word_embeddings={c.get('tie_word_embeddings')}")
    rope = c["_rope"]
    if rope:
        dim = c["_head_dim"]
        low, high, old = rope["low_freq_factor"], rope["high_freq_factor"], rope["original_max_position_embeddings"]
        want_f = []
        for i in range(0, dim, 2):
            wavelen = 2 * math.pi * c["_theta"] ** (i / dim)
            if wavelen < old / high:
                want_f.append(1.0)
            elif wavelen > old / low:
                want_f.append(rope["factor"])
            else:
                smooth = (old / wavelen - low) / (high - low)
                want_f.append(1 / ((1 - smooth) / rope["factor"] + smooth))
        t = names.get("rope_freqs.weight")
        if t is None or t.tensor_type.name != "F32" or not np.allclose(t.data, want_f, rtol=1e-6, atol=0):
            bad.append(f"rope_freqs.weight {None if t is None else list(t.data)}, want {want_f}")
        elif len(set(want_f)) < 3:
            bad.append(f"rope_freqs {want_f} does not exercise all three llama3 regions")
    elif "rope_freqs.weight" in names:
        bad.append("rope_freqs.weight without llama3 rope scaling")
    print(f"  {path}: {arch}, {len(reader.fields)} keys" + "".join("\n  " + b for b in bad))
    return 0 if not bad else 1


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def vocab(path, source):
    import gguf
    reader = gguf.GGUFReader(path)
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = field(reader, "tokenizer.ggml.merges")
    bad = []
    if source == "byte":
        from transformers.convert_slow_tokenizer import bytes_to_unicode
        symbols = bytes_to_unicode()
        want = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.bos_token_id": 256,
                "tokenizer.ggml.eos_token_id": 257, "tokenizer.ggml.padding_token_id": 258,
                "tokenizer.ggml.add_bos_token": True}
        if tokens[:259] != [symbols[b] for b in range(256)] + ["<bos>", "<eos>", "<pad>"]:
            bad.append(f"tokens {tokens[:8]}... are not GPT-2's byte symbols then <bos> <eos> <pad>")
        if types[:259] != [1] * 256 + [3] * 3 or set(types[259:]) - {5}:
            bad.append("token types are not 256 normal, 3 control, then unused")
        if merges != []:
            bad.append(f"{len(merges)} merges, want none")
    else:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(source)
        merges_ref = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
        merges_ref = [m if isinstance(m, str) else " ".join(m) for m in merges_ref]
        want = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
                "tokenizer.ggml.bos_token_id": tok.bos_token_id, "tokenizer.ggml.eos_token_id": tok.eos_token_id,
                "tokenizer.ggml.padding_token_id": tok.pad_token_id,
                "tokenizer.ggml.add_bos_token": tok("a").input_ids[0] == tok.bos_token_id,
                "tokenizer.chat_template": tok.chat_template}
        special = {i for i, a in tok.added_tokens_decoder.items() if a.special}
        for text, i in tok.get_vocab().items():
            if tokens[i] != text or types[i] != (3 if i in special else 1):
                bad.append(f"token {i}: {tokens[i]!r} type {types[i]}, AutoTokenizer {text!r}")
        if any(not t.startswith("[PAD") for t in tokens[len(tok.get_vocab()):]):
            bad.append("ids past the tokenizer's are not [PAD] tokens")
        if merges != merges_ref:
            bad.append(f"merges differ: {merges[:3]} vs {merges_ref[:3]}")
    for key, value in want.items():
        if field(reader, key) != value:
            bad.append(f"{key} = {field(reader, key)!r}, want {value!r}")
    print(f"  {path}: {len(tokens)} tokens, {len(merges)} merges" + "".join("\n  " + b for b in bad[:10]))
    return 0 if not bad else 1


# What llama.cpp's tokenizers do differently from HF tokenizers, by design (docs/models.md lists them): a family may
# differ on a text only for its reason.
KNOWN = {
    "none": lambda text, added: False,
    # Qwen2's NFC normalizer: llama.cpp does not normalize.
    "nfc": lambda text, added: unicodedata.normalize("NFC", text) != text,
    # Metaspace "first" (Mistral): HF adds no U+2581 before text that starts with a space, llama.cpp always does.
    "space": lambda text, added: text.startswith(" ") or any(s + " " in text for s in added),
    # A non-special added token inside a SentencePiece-style text: HF matches it after normalization, llama.cpp
    # before, and llama.cpp puts U+2581 after it.
    "added": lambda text, added: any(a in text for a in added),
}


def tokens(tool, path, cases, known="none"):
    """llama.cpp's ids for the texts of a fixture's cases (HF tokenizers' ids), with and without specials."""
    import subprocess
    import tempfile
    source = cases if cases != "byte" else os.path.join(os.path.dirname(__file__),
                                                         "../reference/fixtures/tokenizers/gpt2.cases.jsonl")
    rows = [json.loads(line) for line in open(source)]
    rows = [r for r in rows if "<tool>" not in r["text"] and "\0" not in r["text"]]  # <tool>: stripping removed
    if cases == "byte":
        rows = [dict(text=r["text"], ids=[256] + list(r["text"].encode()), ids_plain=list(r["text"].encode()))
                for r in rows]
    fixture = json.load(open(cases.replace(".cases.jsonl", ".tokenizer.json"))) if cases != "byte" else {}
    added = [a["content"] for a in fixture.get("added_tokens", [])]
    with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        f.write(b"".join(r["text"].encode() + b"\0" for r in rows))
        f.flush()
        bad, excused = [], 0
        for key, mode in (("ids", "special"), ("ids_plain", "plain")):
            out = subprocess.run([tool, path, "tokenize", f.name, mode], capture_output=True, text=True, check=True)
            for r, line in zip(rows, out.stdout.split("\n")):
                if [int(x) for x in line.split()] != r[key]:
                    if KNOWN[known](r["text"], added):
                        excused += 1
                    else:
                        bad.append(f"{r['text']!r} ({mode}): HF {r[key]}, llama.cpp [{line}]")
    print(f"  {path}: {2 * len(rows)} tokenizations, {excused} differ for the known reason ({known})"
          + "".join("\n  " + b for b in bad[:6]))
    return 0 if not bad else 1


def logits(ref, got, tol):
    import numpy as np
    a, b = np.fromfile(ref, dtype=np.float32), np.fromfile(got, dtype=np.float32)
    err = float(np.abs(a - b).max() / np.abs(a).max()) if a.size == b.size else float("inf")
    print(f"  max |llama.cpp - ranktune| / max |ranktune| = {err:.2e} (tolerance {tol})")
    return 0 if err <= float(tol) else 1


def main(argv):
    cmd = argv[0]
    if cmd == "deps":
        return deps()
    if cmd == "bases":
        return bases(argv[1])
    if cmd == "tensors":
        return tensors(*argv[1:])
    if cmd == "meta":
        return meta(*argv[1:])
    if cmd == "vocab":
        return vocab(*argv[1:])
    if cmd == "tokens":
        return tokens(*argv[1:])
    if cmd == "logits":
        return logits(*argv[1:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
