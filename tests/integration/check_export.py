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
    a = p.parse_args()
    if a.cmd == "deps":
        return deps()
    if a.cmd == "tokens":
        print(" ".join(map(str, TOKENS)))
        return 0
    if a.cmd == "base":
        return base(a.out)
    if a.cmd == "logits":
        return logits(a.kind, a.dir, a.ref, a.tol, a.base)
    return weights(a.dir, a.rank_h5)


if __name__ == "__main__":
    sys.exit(main())
