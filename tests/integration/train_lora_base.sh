# A LoRA checkpoint resumes only over the base it was trained on. The base is an HF fixture model directory
# (tests/reference/fixtures/llama_tied, its vocabulary padded to the byte tokenizer's 259 tokens). After a few
# steps with checkpoints: the same base resumes; the same path and config.json holding a re-typed tensor (values
# exactly equal, only the tensor index differs) is refused with exit 5 naming both identities; so is a copy of the base
# at another path; and a checkpoint whose identity predates the tensor index still resumes, saying so.
source "$(dirname "$0")/lib.sh"
FIXTURE="$RANKTUNE_SOURCE/tests/reference/fixtures/llama_tied"
ARGS=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --seed=3 --train.warmup_steps=1 --train.seq_len=32
  --train.micro_batch=2 --train.eval_every=0 --train.log_every=1 --checkpoint.every_steps=2 --lora.r=4
  --lora.alpha=8 --train.lr=1e-2 --data.tokenizer=byte)  # the base has no tokenizer.json: byte ids, asked for
DIRS=(--output_dir="$WORK/run" --checkpoint.dir="$WORK/ckpt")

# safetensors MODE DIR [TENSOR]: "pad DIR": model.safetensors' embedding padded with zero rows and config.json's
# vocab_size raised to 259; "retype DIR TENSOR": that BF16 tensor stored as F32 (exact: the bf16 bits shifted up).
safetensors() {
  python3 - "$@" <<'PY'
import json, pathlib, struct, sys
import numpy as np
mode, d = sys.argv[1], pathlib.Path(sys.argv[2])
raw = (d / "model.safetensors").read_bytes()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
meta = header.pop("__metadata__", {})
tensors = {k: [v["dtype"], v["shape"], raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]]
           for k, v in header.items()}
if mode == "pad":
    cfg = json.loads((d / "config.json").read_text())
    t = tensors["model.embed_tokens.weight"]
    assert t[0] == "BF16" and cfg["tie_word_embeddings"], t[:2]
    t[2] += bytes(2 * (259 - t[1][0]) * t[1][1])
    t[1] = [259, t[1][1]]
    cfg["vocab_size"] = 259
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
else:
    t = tensors[sys.argv[3]]
    assert t[0] == "BF16", t[0]
    t[0], t[2] = "F32", (np.frombuffer(t[2], "<u2").astype("<u4") << 16).tobytes()
width = {"F32": 4, "BF16": 2}
out, off = {}, 0
for k in sorted(tensors, key=lambda k: (-width[tensors[k][0]], k)):  # widest first: every tensor stays aligned
    out[k] = {"dtype": tensors[k][0], "shape": tensors[k][1], "data_offsets": [off, off + len(tensors[k][2])]}
    off += len(tensors[k][2])
out["__metadata__"] = meta
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
data = b"".join(tensors[k][2] for k in sorted(tensors, key=lambda k: out[k]["data_offsets"][0]))
(d / "model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + data)
PY
}

# identity STEP_DIR: the base_model attribute of its rank file.
identity() { python3 -c 'import h5py, sys; print(h5py.File(sys.argv[1], "r").attrs["base_model"])' "$1/rank_00000.h5"; }

mkdir -p "$WORK/base"
cp "$FIXTURE/config.json" "$FIXTURE/model.safetensors" "$WORK/base/"
safetensors pad "$WORK/base" && ok "base: the fixture with a 259-token vocabulary" || fail "base not written"
cp -r "$WORK/base" "$WORK/base_copy"

run train 0 "$RANKTUNE_BIN" train "${ARGS[@]}" "${DIRS[@]}" --model.path="$WORK/base" --train.steps=4
expect train out "step 4/4"
id4=$(identity "$WORK/ckpt/step_00000004")
[[ "$id4" =~ ^"$WORK/base, config "[0-9a-f]{16}", tensors "[0-9a-f]{16}$ ]] && ok "identity: $id4" \
  || fail "identity lacks path, config or tensor hash: '$id4'"

run same_base 0 "$RANKTUNE_BIN" train "${ARGS[@]}" "${DIRS[@]}" --model.path="$WORK/base" --train.steps=6 --resume=auto
expect same_base out "resume: $WORK/ckpt/step_00000004 (step 4,"
lines same_base out "without a tensor index" 0

# A checkpoint of an older ranktune: its identity has no ", tensors" part (rewritten here, and the manifest's sizes
# and checksums with it). It resumes over the same path and config, and rank 0 says what was compared.
mkdir -p "$WORK/legacy"
cp -r "$WORK/ckpt/step_00000006" "$WORK/legacy/"
echo step_00000006 >"$WORK/legacy/latest"
python3 - "$WORK/legacy/step_00000006" "$RANKTUNE_SOURCE/tests/support" <<'PY' && ok "legacy identity written" || fail "legacy identity not written"
import pathlib, sys
import h5py
sys.path.insert(0, sys.argv[2])
from crc32c_ref import reseal_manifest
step = pathlib.Path(sys.argv[1])
for f in sorted(step.glob("rank_*.h5")):
    with h5py.File(f, "r+") as h:
        h.attrs["base_model"] = h.attrs["base_model"].split(", tensors ")[0]
reseal_manifest(step)
PY
run legacy 0 "$RANKTUNE_BIN" train "${ARGS[@]}" --model.path="$WORK/base" --train.steps=7 --resume=auto \
  --checkpoint.dir="$WORK/legacy" --output_dir="$WORK/legacy_run"
expect legacy out "resume: $WORK/legacy/step_00000006 (step 6,"
expect legacy out "records its base without a tensor index (an older ranktune): only the path and config"

# refused NAME WANT_PATH: NAME exited 5 naming the checkpoint's base ($id6) and this run's, whose path is WANT_PATH;
# prints "same" or "other" for the config hash and the tensor hash of the two.
refused() {
  python3 - "$WORK/$1.err" "$id6" "$2" <<'PY'
import re, sys
err, saved, path = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
m = re.search(r"was trained on base model '([^']*)', this run uses '([^']*)'", err)
assert m, "no refusal naming both bases in: " + err[-400:]
assert m.group(1) == saved, (m.group(1), saved)
now = re.fullmatch(r"(.*), config ([0-9a-f]{16}), tensors ([0-9a-f]{16})", m.group(2))
old = re.fullmatch(r"(.*), config ([0-9a-f]{16}), tensors ([0-9a-f]{16})", m.group(1))
assert now and old and now.group(1) == path, m.group(2)
print("config", "same" if now.group(2) == old.group(2) else "other", "tensors", "same" if now.group(3) == old.group(3) else "other")
PY
}
id6=$(identity "$WORK/ckpt/step_00000006")

# Same path, same config.json, one tensor stored as F32 instead of BF16 (same values): another tensor index.
safetensors retype "$WORK/base" model.layers.0.input_layernorm.weight && ok "base re-typed in place" || fail "retype"
run retyped 5 "$RANKTUNE_BIN" train "${ARGS[@]}" "${DIRS[@]}" --model.path="$WORK/base" --train.steps=8 --resume=auto
got=$(refused retyped "$WORK/base")
[ "$got" = "config same tensors other" ] && ok "retyped: refused naming both bases ($got)" \
  || fail "retyped: expected a refusal for the tensor index alone, got: $got"
expect retyped err "exit 5"

# The unchanged base at another path.
run moved 5 "$RANKTUNE_BIN" train "${ARGS[@]}" "${DIRS[@]}" --model.path="$WORK/base_copy" --train.steps=8 --resume=auto
got=$(refused moved "$WORK/base_copy")
[ "$got" = "config same tensors same" ] && ok "moved: refused naming both paths ($got)" \
  || fail "moved: expected a refusal for the path, got: $got"

# Neither refusal touched the checkpoints.
[ "$(cat "$WORK/ckpt/latest")" = step_00000006 ] && ok "latest still names step 6" || fail "latest moved"
run verify 0 "$RANKTUNE_BIN" checkpoint verify "$WORK/ckpt"
finish
