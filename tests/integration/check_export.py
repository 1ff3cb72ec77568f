#!/usr/bin/env python3
"""Checks `ranktune export` output with the Hugging Face libraries (tests/integration/export.sh drives it).

  check_export.py deps                        exit 77 (skip) when transformers, peft or safetensors is missing
  check_export.py base OUT                    a small random Llama (vocab 259, the byte tokenizer's) saved by transformers
  check_export.py logits full|peft DIR REF.f32 TOL [--base BASE]
                                              loads DIR (full: AutoModelForCausalLM; peft: BASE + PeftModel), runs the
                                              tokens of TOKENS, compares with ranktune's logits REF.f32:
                                              max |ours - theirs| / max |ours| <= TOL; peft: the adapters must move
                                              the logits by more than 100 x TOL from the base's
  check_export.py weights DIR RANK_H5         every tensor of DIR/model.safetensors (fp32) equals the checkpoint's
                                              fp32 master (optim/<name>/master) or, without one, its weight
  check_export.py hfbase OUT                  a model directory as the Hub has them: a small random Llama saved by
                                              transformers with a byte-level BPE tokenizer trained by `tokenizers`
                                              (bos <s> 1, eos </s> 2, pad <pad> 0), its tokenizer_config.json holding
                                              the chat template, a special_tokens_map.json, generation_config.json
  check_export.py hub EXPORT BASE [--model]  AutoTokenizer of EXPORT has BASE's bos/eos/pad tokens and ids, chat
                                              template, and ids of a text and of a rendered conversation; --model
                                              (a full model): its config.json has BASE's bos/eos/pad ids, its
                                              generation_config.json BASE's (or, without one, those ids)
  check_export.py byte EXPORT                 AutoTokenizer of EXPORT (a byte-tokenizer run) gives the byte
                                              tokenizer's ids (bos 256, then the UTF-8 bytes; eos 257, pad 258),
                                              and generation_config.json eos 257
  check_export.py stops EXPORT PROMPT N OUT   HF generate (greedy, up to N tokens) on EXPORT with its own
                                              AutoTokenizer and generation_config stops at eos before N tokens, and
                                              after the tokens `ranktune generate` reported in OUT (which leaves out
                                              the eos it stopped on)
  check_export.py prepared H5 BASE TEXT       the rows `ranktune prepare` wrote use BASE's tokenizer: ids below its
                                              size, some above the byte tokenizer's 258, the first row starting
                                              with AutoTokenizer(BASE)(TEXT) plus eos
"""
import argparse
import importlib.util
import sys

TOKENS = [(7 * i * i + 3 * i + 1) % 259 for i in range(24)]


def deps():
    missing = [m for m in ("transformers", "peft", "safetensors") if importlib.util.find_spec(m) is None]
    if missing:
        print("SKIP: python packages missing: " + ", ".join(missing) + " (scripts/setup.sh installs them)")
        return 77
    return 0


def load_kwargs():
    import torch
    import transformers
    major = int(transformers.__version__.split(".")[0])
    # transformers 5 renamed torch_dtype to dtype.
    return {"dtype" if major >= 5 else "torch_dtype": torch.float32, "attn_implementation": "eager"}


def base(out):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-5, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    return 0


from hf_tiny_tokenizer import CHAT, CORPUS, tiny_tokenizer


def hfbase(out):
    import json
    import os
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    fast = tiny_tokenizer()
    fast.save_pretrained(out)
    # As most Hub models have it: the template inside tokenizer_config.json, and a special_tokens_map.json.
    path = os.path.join(out, "tokenizer_config.json")
    config = json.load(open(path))
    config["chat_template"] = CHAT
    json.dump(config, open(path, "w"), indent=2)
    if os.path.exists(os.path.join(out, "chat_template.jinja")):
        os.remove(os.path.join(out, "chat_template.jinja"))
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
              open(os.path.join(out, "special_tokens_map.json"), "w"), indent=2)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(out, safe_serialization=True)
    assert os.path.exists(os.path.join(out, "generation_config.json"))
    return 0


def same_tokenizer(export, base_dir):
    from transformers import AutoTokenizer
    ours, theirs = AutoTokenizer.from_pretrained(export), AutoTokenizer.from_pretrained(base_dir)
    bad = []
    for attr in ("bos_token", "eos_token", "pad_token", "bos_token_id", "eos_token_id", "pad_token_id",
                 "chat_template"):
        if getattr(ours, attr) != getattr(theirs, attr) or getattr(theirs, attr) is None:
            bad.append(f"{attr}: export {getattr(ours, attr)!r}, base {getattr(theirs, attr)!r}")
    chat = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]
    for what, a, b in [("ids", ours(CORPUS[2]).input_ids, theirs(CORPUS[2]).input_ids),
                       ("chat ids", ours.apply_chat_template(chat, tokenize=True, add_generation_prompt=True),
                        theirs.apply_chat_template(chat, tokenize=True, add_generation_prompt=True))]:
        if a != b:
            bad.append(f"{what}: export {a}, base {b}")
    print(f"  AutoTokenizer({export}): bos {ours.bos_token_id}, eos {ours.eos_token_id}, pad {ours.pad_token_id}, "
          f"chat template {len(ours.chat_template or '')} characters" + "".join("\n  " + b for b in bad))
    return 0 if not bad else 1


def same_ids(export, base_dir):
    import json
    import os
    keys = ("bos_token_id", "eos_token_id", "pad_token_id")
    base = json.load(open(os.path.join(base_dir, "config.json")))
    conf = json.load(open(os.path.join(export, "config.json")))
    gen = json.load(open(os.path.join(export, "generation_config.json")))
    base_gen_path = os.path.join(base_dir, "generation_config.json")
    want_gen = json.load(open(base_gen_path)) if os.path.exists(base_gen_path) else base
    bad = [f"config.json {k}: {conf.get(k)!r}, base {base.get(k)!r}" for k in keys if conf.get(k) != base.get(k)]
    bad += [f"generation_config.json {k}: {gen.get(k)!r}, want {want_gen.get(k)!r}" for k in keys
            if gen.get(k) != want_gen.get(k)]
    print(f"  {export}: config.json and generation_config.json ids {[conf.get(k) for k in keys]}"
          + "".join("\n  " + b for b in bad))
    return 0 if not bad and conf.get("eos_token_id") is not None else 1


def byte_export(export):
    import json
    import os
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(export)
    gen = json.load(open(os.path.join(export, "generation_config.json")))
    conf = json.load(open(os.path.join(export, "config.json")))
    bad = []
    for text in CORPUS + ["caf\u00e9 \u2603 \U0001d11e\ttab\r\n  "]:
        want = [256] + list(text.encode())
        if tok(text).input_ids != want:
            bad.append(f"{text!r}: {tok(text).input_ids[:12]}... != {want[:12]}...")
        if tok.decode(want, skip_special_tokens=True) != text:
            bad.append(f"decode of {text!r}: {tok.decode(want, skip_special_tokens=True)!r}")
    ids = (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, gen.get("eos_token_id"), conf.get("eos_token_id"))
    if ids != (256, 257, 258, 257, 257):
        bad.append(f"bos/eos/pad, generation_config eos, config eos: {ids}")
    print(f"  AutoTokenizer({export}) is the byte tokenizer: {'yes' if not bad else 'no'}" +
          "".join("\n  " + b for b in bad))
    return 0 if not bad else 1


def stops(export, prompt, max_new, out_path):
    import re
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    m = re.search(r"generated (\d+) tokens", open(out_path, errors="replace").read())
    if not m:
        print(f"  no 'generated N tokens' line in {out_path}")
        return 1
    ours = int(m.group(1))
    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export, **load_kwargs()).eval()
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():  # greedy, everything else from the export's generation_config.json
        out = model.generate(ids, do_sample=False, max_new_tokens=int(max_new))[0, ids.shape[1]:].tolist()
    print(f"  HF generate on {export}: {len(out)} new tokens {out} ({tok.decode(out)!r}); ranktune generate: {ours}")
    # ranktune's count leaves out the eos it stopped on.
    return 0 if out and out[-1] == tok.eos_token_id and len(out) < int(max_new) and len(out) == ours + 1 else 1


def prepared(h5_path, base_dir, text):
    import h5py
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(base_dir)
    with h5py.File(h5_path, "r") as f:
        tokens = f["tokens"][()]
    want = (tok(text).input_ids + [tok.eos_token_id])[:tokens.shape[1]]  # a longer document is split over rows
    first = tokens[0][:len(want)]
    print(f"  {h5_path}: ids {tokens.min()}..{tokens.max()} (the base tokenizer has {len(tok)}); first document "
          f"{first.tolist()[:8]}..., AutoTokenizer {want[:8]}...")
    return 0 if tokens.max() < len(tok) and tokens.max() > 258 and first.tolist() == want else 1


def logits(kind, directory, ref_path, tol, base_dir):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM
    kw = load_kwargs()
    if kind == "full":
        model = AutoModelForCausalLM.from_pretrained(directory, **kw)
    else:
        from peft import PeftModel
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, **kw), directory)
    model.eval()
    with torch.no_grad():
        theirs = model(torch.tensor([TOKENS])).logits[0].float().numpy()
    ours = np.fromfile(ref_path, dtype=np.float32).reshape(theirs.shape)
    err = float(np.abs(ours - theirs).max() / np.abs(ours).max())
    print(f"  {kind} {directory}: max |ranktune - HF| / max |ranktune| = {err:.2e} (tolerance {tol:g})")
    ok = err <= tol
    if kind == "peft":
        with torch.no_grad(), model.disable_adapter():
            plain = model(torch.tensor([TOKENS])).logits[0].float().numpy()
        moved = float(np.abs(ours - plain).max() / np.abs(ours).max())
        print(f"  the adapters move the logits by {moved:.2e} from the base's (must exceed {100 * tol:g})")
        ok = ok and moved > 100 * tol
    return 0 if ok else 1


def weights(directory, rank_h5):
    import h5py
    import numpy as np
    from safetensors.numpy import load_file
    exported = load_file(f"{directory}/model.safetensors")
    worst, n = 0.0, 0
    with h5py.File(rank_h5, "r") as f:
        for name, x in exported.items():
            path = name.replace(".", "/")
            master = f"optim/{path}/master"
            src = f[master] if master in f else f[f"weights/{path}"]
            want = src[()].astype(np.float32)
            worst = max(worst, float(np.abs(want - x.astype(np.float32)).max()))
            n += 1
    print(f"  {n} tensors of {directory} against {rank_h5}: max abs difference {worst:g} (must be 0)")
    return 0 if n and worst == 0 else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("deps")
    b = sub.add_parser("base")
    b.add_argument("out")
    lg = sub.add_parser("logits")
    lg.add_argument("kind", choices=["full", "peft"])
    lg.add_argument("dir")
    lg.add_argument("ref")
    lg.add_argument("tol", type=float)
    lg.add_argument("--base")
    w = sub.add_parser("weights")
    w.add_argument("dir")
    w.add_argument("rank_h5")
    sub.add_parser("tokens")
    for name, args in [("hfbase", ["out"]), ("hub", ["export", "base"]), ("byte", ["export"]),
                       ("stops", ["export", "prompt", "max_new", "out"]), ("prepared", ["h5", "base", "text"])]:
        sp = sub.add_parser(name)
        for arg in args:
            sp.add_argument(arg)
        if name == "hub":
            sp.add_argument("--model", action="store_true")
    a = p.parse_args()
    if a.cmd == "deps":
        return deps()
    if a.cmd == "tokens":
        print(" ".join(map(str, TOKENS)))
        return 0
    if a.cmd == "base":
        return base(a.out)
    if a.cmd == "hfbase":
        return hfbase(a.out)
    if a.cmd == "hub":
        return max(same_tokenizer(a.export, a.base), same_ids(a.export, a.base) if a.model else 0)
    if a.cmd == "byte":
        return byte_export(a.export)
    if a.cmd == "stops":
        return stops(a.export, a.prompt, a.max_new, a.out)
    if a.cmd == "prepared":
        return prepared(a.h5, a.base, a.text)
    if a.cmd == "logits":
        return logits(a.kind, a.dir, a.ref, a.tol, a.base)
    return weights(a.dir, a.rank_h5)


if __name__ == "__main__":
    sys.exit(main())
