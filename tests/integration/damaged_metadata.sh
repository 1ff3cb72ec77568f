#!/usr/bin/env bash
# One flipped bit in HDF5 metadata is an error, never a crash or a hang (#16 point 2): in a prepared dataset,
# `train` exits 2 with one line naming the file and `ranktune prepare` as the fix (also on 2 ranks); in a checkpoint
# rank file, `checkpoint inspect` exits 5 naming the file, its rank and both CRCs, without parsing it. Before the
# checksums, bit 7 of a string's length in the global heap crashed HDF5 (SIGSEGV) or hung it. Also: a dataset of the
# earlier format (no user block) still trains, with a note; a FIFO named *.h5 is refused at once (#16 point 11).
source "$(dirname "$0")/lib.sh"
RUN_TIMEOUT=${RUN_TIMEOUT:-60}

python3 - "$WORK" <<'PY'
import json, sys
lines = [json.dumps({"text": f"Ada lives in Oslo, record {i}. " * 3}) for i in range(60)]
open(f"{sys.argv[1]}/corpus.jsonl", "w").write("\n".join(lines) + "\n")
PY

# Offsets to flip, as "offset bit label" lines: the header fields of the user block (if any), the superblock, the
# length fields of the first strings of the global heap (the crash of #16), the root group's object header, the
# local heap and symbol table of the root group, and bytes of the last KiB. Chunk data is left out: Fletcher32 and
# the checksum both cover it, and flips there never reached HDF5's metadata parser.
offsets() {
  python3 - "$1" <<'PY'
import re, struct, sys
d = open(sys.argv[1], "rb").read()
base = d.find(b"\x89HDF\r\n\x1a\n")
out = []
if base > 0:
    out += [(0, 0, "magic"), (17, 3, "header version"), (25, 1, "header file size"), (33, 6, "header CRC32C")]
out += [(base + 0, 1, "HDF5 signature"), (base + 9, 0, "superblock version fields"),
        (base + 40, 2, "superblock end of file"), (base + 56, 5, "superblock root entry")]
gcol = d.find(b"GCOL")
at = gcol + 16
# Object: index u16, refcount u16, reserved u32, length u64, data padded to 8 bytes. Bit 7 of byte 1 of a length hung
# HDF5, of byte 2 or 5 crashed it.
for i, picks in enumerate(((1, 2), (1, 5), (2, 5))):
    size = struct.unpack_from("<Q", d, at + 8)[0]
    out += [(at + 8 + byte, 7, f"global heap string {i} length, byte {byte}") for byte in picks]
    at += 16 + (size + 7) // 8 * 8
tree = d.find(b"TREE", base)
for sig in (b"HEAP", b"SNOD"):
    p = d.find(sig, base)
    if p >= 0:
        out += [(p + 8, 4, sig.decode() + " field")]
out += [(tree + 6, 2, "B-tree node"), (len(d) - 700, 3, "last KiB"), (len(d) - 100, 0, "last KiB"),
        (len(d) - 1, 5, "last byte")]
for offset, bit, label in out:
    print(offset, bit, label)
PY
}

flip() {  # flip SRC DST OFFSET BIT
  python3 - "$@" <<'PY'
import sys
src, dst, offset, bit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
d = bytearray(open(src, "rb").read())
d[offset] ^= 1 << bit
open(dst, "wb").write(d)
PY
}

SMALL=(--config "$RANKTUNE_SOURCE/configs/tiny.ini" --device=cpu --train.seq_len=32 --model.hidden_size=32
  --model.num_layers=1 --model.num_heads=2 --model.num_kv_heads=1 --model.intermediate_size=64 --train.eval_every=0
  --train.steps=2 --train.micro_batch=4)

run prepare 0 "$RANKTUNE_BIN" prepare --data.path="$WORK/corpus.jsonl" --train.seq_len=32 --prepare.output="$WORK/d.h5"

# Prepared dataset: every flip is refused before HDF5 opens the file, with one error line.
n=0
while read -r offset bit label; do
  n=$((n + 1))
  flip "$WORK/d.h5" "$WORK/bad.h5" "$offset" "$bit"
  run "train_flip_$n" 2 "$RANKTUNE_BIN" train "${SMALL[@]}" --data.path="$WORK/bad.h5" --output_dir="$WORK/t$n" \
    --checkpoint.every_steps=0 --checkpoint.at_end=false
  if [ "$(grep -c "ranktune: error:" "$WORK/train_flip_$n.err")" = 1 ] &&
    grep "ranktune: error:" "$WORK/train_flip_$n.err" | grep -qF "token dataset '$WORK/bad.h5'" &&
    grep -qF "ranktune: hint: re-run \`ranktune prepare\`" "$WORK/train_flip_$n.err"; then
    ok "flip at $offset bit $bit ($label): one error line naming the file, hint ranktune prepare"
  else
    fail "flip at $offset bit $bit ($label): message"; sed 's/^/    /' "$WORK/train_flip_$n.err" | tail -5
  fi
done < <(offsets "$WORK/d.h5")
[ "$n" -ge 20 ] && ok "$n flips tried" || fail "only $n flips"

# The crash of #16 on 2 ranks: both ranks stop with the one agreed error line.
read -r offset bit _ < <(offsets "$WORK/d.h5" | grep "global heap string 1 length, byte 1")
flip "$WORK/d.h5" "$WORK/bad.h5" "$offset" "$bit"
run train_flip_np2 2 "${MPIRUN[@]}" 2 "$RANKTUNE_BIN" train "${SMALL[@]}" --data.path="$WORK/bad.h5" \
  --output_dir="$WORK/np2" --checkpoint.every_steps=0 --checkpoint.at_end=false
lines train_flip_np2 err "ranktune: error:" 1
expect train_flip_np2 err "token dataset '$WORK/bad.h5' is damaged: its CRC32C is"

# The earlier format: HDF5 from byte 0 (the user block cut off; HDF5 reads the file at its new place) trains.
python3 -c 'import sys; open(sys.argv[2], "wb").write(open(sys.argv[1], "rb").read()[512:])' "$WORK/d.h5" "$WORK/v1.h5"
run earlier_format 0 "$RANKTUNE_BIN" train "${SMALL[@]}" --data.path="$WORK/v1.h5" --output_dir="$WORK/v1" \
  --checkpoint.every_steps=0 --checkpoint.at_end=false
expect earlier_format out "have no checksum (prepared by an earlier ranktune)"
expect earlier_format out "done: 2 steps"

# A FIFO named like a dataset: refused at once instead of blocking in the first read.
mkfifo "$WORK/pipe.h5"
RUN_TIMEOUT=30 run fifo 2 "$RANKTUNE_BIN" train "${SMALL[@]}" --data.path="$WORK/pipe.h5" --output_dir="$WORK/fifo"
expect fifo err "data.path '$WORK/pipe.h5' is a FIFO, not a regular file"

# Checkpoint rank file: inspect reports the failed CRC and leaves the file to no HDF5 call.
run checkpoint 0 "$RANKTUNE_BIN" train "${SMALL[@]}" --output_dir="$WORK/run" --checkpoint.dir="$WORK/ck" \
  --checkpoint.every_steps=2
step=$WORK/ck/step_00000002
n=0
while read -r offset bit label; do
  n=$((n + 1))
  rm -rf "$WORK/ckbad" && cp -r "$WORK/ck" "$WORK/ckbad"
  flip "$step/rank_00000.h5" "$WORK/ckbad/step_00000002/rank_00000.h5" "$offset" "$bit"
  run "inspect_flip_$n" 5 "$RANKTUNE_BIN" checkpoint inspect "$WORK/ckbad"
  if grep -q "rank_00000.h5 (rank 0): crc32c [0-9a-f]\{8\} differs from the manifest's [0-9a-f]\{8\}" \
    "$WORK/inspect_flip_$n.err" && grep -qF "rank_00000.h5 (rank 0): not parsed" "$WORK/inspect_flip_$n.out" &&
    ! grep -q "^  attributes:" "$WORK/inspect_flip_$n.out"; then
    ok "inspect, flip at $offset bit $bit ($label): the failed CRC reported, the file not parsed"
  else
    fail "inspect, flip at $offset bit $bit ($label)"; sed 's/^/    /' "$WORK/inspect_flip_$n.err" | tail -3
  fi
done < <(offsets "$step/rank_00000.h5")
run inspect_intact 0 "$RANKTUNE_BIN" checkpoint inspect "$WORK/ck"
expect inspect_intact out "  attributes:"
finish
