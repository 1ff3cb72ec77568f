#!/usr/bin/env python3
"""Greedy `ranktune generate` from a model directory against transformers (tests/integration/train_tiny.sh drives it).

  check_generate.py MODEL_DIR PROMPT GENERATE_OUT MAX_NEW_TOKENS

MODEL_DIR is a Hugging Face Llama directory trained with the byte tokenizer (ids 0-255 are the bytes, 256 bos,
257 eos, 258 pad), GENERATE_OUT the stdout of `ranktune generate MODEL_DIR --generate.prompt=PROMPT
--generate.max_new_tokens=MAX_NEW_TOKENS` (greedy). The prompt is encoded as ranktune does (bos, then the UTF-8
bytes); transformers' generate(do_sample=False) continues it for up to MAX_NEW_TOKENS tokens, cut at eos. The continuation's token ids must be equal. The byte
tokenizer makes ranktune's printed text its ids exactly (one byte per id; bos and pad are the only ids it drops, and
the script fails if transformers produced one). Exit 77 (skip) without torch or transformers.
"""
import importlib.util
import re
import sys

BOS, EOS, PAD = 256, 257, 258


def main(model_dir, prompt, out_path, max_new):
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        print("SKIP: python packages missing: " + ", ".join(missing) + " (scripts/setup.sh installs them)")
        return 77
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    text = open(out_path, "rb").read()
    m = re.search(rb"^generate: [^\n]*greedy\n(.*)\ngenerated (\d+) tokens after a (\d+)-token prompt", text, re.S | re.M)
    if not m:
        print("no greedy generation in " + out_path)
        return 1
    ours_text, count, prompt_len = m.group(1), int(m.group(2)), int(m.group(3))
    prompt_bytes = prompt.encode()
    if not ours_text.startswith(prompt_bytes):
        print("the output does not start with the prompt")
        return 1
    ours = list(ours_text[len(prompt_bytes):])
    ids = [BOS] + list(prompt_bytes)
    if prompt_len != len(ids):
        print(f"ranktune encoded the prompt as {prompt_len} tokens, expected {len(ids)}")
        return 1

    # transformers 5 renamed torch_dtype to dtype.
    kw = {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": torch.float32}
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager", **kw).eval()
    with torch.no_grad():
        full = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=int(max_new), min_new_tokens=0,
                              eos_token_id=EOS, pad_token_id=PAD, num_beams=1, temperature=None, top_p=None,
                              top_k=None)[0].tolist()
    theirs = full[len(ids):]
    if EOS in theirs:
        theirs = theirs[:theirs.index(EOS)]
    print(f"  transformers {transformers.__version__}: {len(theirs)} tokens: {bytes(t for t in theirs if t < 256)[:60]!r}")
    if any(t >= 256 for t in theirs):
        print("transformers generated a special id; the byte comparison cannot hold it")
        return 1
    if theirs == ours and len(ours) == count:
        return 0
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    print(f"token ids differ at continuation position {first}: ranktune {ours[first:first + 8]} "
          f"transformers {theirs[first:first + 8]} (ranktune reported {count} tokens)")
    if first < min(len(ours), len(theirs)):
        with torch.no_grad():
            logits = model(torch.tensor([ids + theirs[:first]])).logits[0, -1]
        print(f"  transformers' logits there: its choice {logits[theirs[first]].item():.6f}, "
              f"ranktune's {logits[ours[first]].item():.6f} (a near tie?)")
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
