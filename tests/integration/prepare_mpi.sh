# `ranktune prepare` under mpirun: the ranks share the tokenizing and rank 0 writes the file one process writes, byte
# for byte, at 1, 2 and 3 ranks (JSONL text and prompt/response records, chat records with the Llama-3 tokenizer and
# template, a text file); a bad record in rank 1's batches is the error one process reports (same line, same exit
# code, one error line, no hang), or skipped and counted as one process does.
source "$(dirname "$0")/lib.sh"
RUN_TIMEOUT=60

FIX="$RANKTUNE_SOURCE/tests/reference/fixtures/tokenizers"
python3 - "$WORK" "$FIX/llama3.chat.jsonl" <<'PY'
import json, sys
work, chat_fixture = sys.argv[1], sys.argv[2]
words = "alpha beta gamma delta über café 北京 naïve 42 don't".split()
lines = []
for i in range(700):
    text = " ".join(words[(i * 7 + k) % len(words)] for k in range(3 + i % 11)) + f" {i}."
    if i % 5 == 3:
        lines.append(json.dumps({"prompt": f"Q{i}: say it\n", "response": text}))
    else:
        lines.append(json.dumps({"text": text}))
open(f"{work}/a.jsonl", "w").write("\n".join(lines) + "\n")
# Batches are 256 records at one thread (256 * the largest prepare.threads of the ranks): line 300 is in batch 1,
# which rank 1 tokenizes at 2 ranks.
bad = lines[:299] + ['{"text": "unterminated'] + lines[299:]
open(f"{work}/bad.jsonl", "w").write("\n".join(bad) + "\n")
chats = []
for line in open(chat_fixture):
    rec = json.loads(line)
    chats.append(json.dumps({"messages": rec["messages"]}))
open(f"{work}/chat.jsonl", "w").write("\n".join((chats * 60)[:400]) + "\n")
open(f"{work}/notes.txt", "w").write("\n\n".join(f"Paragraph {i}: " + " ".join(words[: 2 + i % 9]) for i in range(300)))
PY

COMMON=(--data.tokenizer="$FIX/llama3.tokenizer.json" --data.chat_template=llama3 --train.seq_len=96)
DATA="$WORK/a.jsonl,$WORK/chat.jsonl,$WORK/notes.txt"
# summary NAME: the `prepared` line without its output path and seconds, for comparing runs.
summary() { grep -F "prepared " "$WORK/$1.out" | sed -E 's|prepared [^:]*:|prepared:|; s|, [0-9.]+ s$||'; }

run one 0 "$RANKTUNE_BIN" prepare "${COMMON[@]}" --data.path="$DATA" --prepare.output="$WORK/one.h5" \
  --prepare.threads=1
expect one out "chat format: built-in llama3"
for n in 1 2 3; do
  run "np$n" 0 "${MPIRUN[@]}" "$n" "$RANKTUNE_BIN" prepare "${COMMON[@]}" --data.path="$DATA" \
    --prepare.output="$WORK/np$n.h5" --prepare.threads=1
  cmp -s "$WORK/one.h5" "$WORK/np$n.h5" && ok "$n rank(s) write the file of one process, byte for byte" \
    || fail "$n rank(s) wrote another file than one process"
  [ "$(summary one)" = "$(summary "np$n")" ] && ok "$n rank(s): the summary of one process" \
    || fail "$n rank(s): summary '$(summary "np$n")', one process '$(summary one)'"
  lines "np$n" out "chat format: built-in llama3" 1
done
expect np3 out "3 rank(s), 1 thread(s) tokenizing on rank 0"
# Threads per rank differ from the batch size's: still the same file.
run np2t 0 "${MPIRUN[@]}" 2 "$RANKTUNE_BIN" prepare "${COMMON[@]}" --data.path="$DATA" \
  --prepare.output="$WORK/np2t.h5" --prepare.threads=2
cmp -s "$WORK/one.h5" "$WORK/np2t.h5" && ok "2 ranks of 2 threads write the file of one process" \
  || fail "2 ranks of 2 threads wrote another file than one process"

# A malformed line in rank 1's batch: one process's error, exit code and hint, from rank 0 only; nothing written.
run bad_one 2 "$RANKTUNE_BIN" prepare "${COMMON[@]}" --data.path="$WORK/bad.jsonl,$WORK/chat.jsonl" \
  --prepare.output="$WORK/bad_one.h5" --prepare.threads=1
run bad_np2 2 "${MPIRUN[@]}" 2 "$RANKTUNE_BIN" prepare "${COMMON[@]}" --data.path="$WORK/bad.jsonl,$WORK/chat.jsonl" \
  --prepare.output="$WORK/bad_np2.h5" --prepare.threads=1
expect bad_np2 err "$WORK/bad.jsonl:300"
lines bad_np2 err "ranktune: error:" 1
if [ -n "$(grep -F "ranktune: " "$WORK/bad_one.err")" ] &&
  [ "$(grep -F "ranktune: " "$WORK/bad_one.err")" = "$(grep -F "ranktune: " "$WORK/bad_np2.err")" ]; then
  ok "2 ranks report the error and hint of one process"
else
  fail "2 ranks report another error than one process:"; sed 's/^/    /' "$WORK/bad_one.err" "$WORK/bad_np2.err"
fi
[ ! -e "$WORK/bad_np2.h5" ] && ! ls "$WORK"/bad_np2.h5.tmp.* >/dev/null 2>&1 && ok "no output left by the failed run" \
  || fail "the failed run at 2 ranks left a file behind"

run skip_one 0 "$RANKTUNE_BIN" prepare "${COMMON[@]}" --data.path="$WORK/bad.jsonl,$WORK/chat.jsonl" \
  --prepare.output="$WORK/skip_one.h5" --prepare.threads=1 --data.on_bad_record=skip
run skip_np2 0 "${MPIRUN[@]}" 2 "$RANKTUNE_BIN" prepare "${COMMON[@]}" --data.path="$WORK/bad.jsonl,$WORK/chat.jsonl" \
  --prepare.output="$WORK/skip_np2.h5" --prepare.threads=1 --data.on_bad_record=skip
expect skip_np2 out "skipped 1 bad record(s); first: $WORK/bad.jsonl:300"
cmp -s "$WORK/skip_one.h5" "$WORK/skip_np2.h5" && ok "2 ranks skip as one process does, byte for byte" \
  || fail "2 ranks wrote another file than one process when skipping"
[ "$(summary skip_one)" = "$(summary skip_np2)" ] && ok "2 ranks: the skip summary of one process" \
  || fail "2 ranks: summary '$(summary skip_np2)', one process '$(summary skip_one)'"

finish
