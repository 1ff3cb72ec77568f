# device=auto and the prompt of `ranktune generate` (#15 point 7). With no GPU visible, `topology` and a `train`
# without a config or --device run on the CPU with a note, while --device=cuda still fails (exit 4); train's closing
# sample is labelled and one line of valid UTF-8 (invalid bytes as \xNN); generate reads --generate.prompt_file as
# is and refuses both prompt keys, a missing or empty file and --device=cuda without a GPU; a prompt that starts with
# bos (a rendered chat template) gets no second bos: its length is HF tokenizers' without special tokens.
source "$(dirname "$0")/lib.sh"
export CUDA_VISIBLE_DEVICES=  # no GPU visible, on a GPU machine too
llama3_tok="$RANKTUNE_SOURCE/tests/reference/fixtures/tokenizers/llama3.tokenizer.json"

run topo 0 "$RANKTUNE_BIN" topology
expect topo out "mode:   single on CPU"
expect topo out "note:   device=auto: no GPU visible on host"
run topo_cuda 4 "$RANKTUNE_BIN" topology --device=cuda
expect topo_cuda err "no GPU visible on host"

# The embedded default job, as a newcomer starts it (no config, no --device), for 2 steps.
run train 0 "$RANKTUNE_BIN" train --train.steps=2 --output_dir="$WORK/run" --checkpoint.dir="$WORK/ckpt"
expect train out "note:   device=auto: no GPU visible on host"
python3 - "$WORK/train.out" <<'PY' && ok "the sample is labelled and one line of valid UTF-8" \
  || fail "the sample is unlabelled or holds raw bytes"
import re, sys
samples = [l for l in open(sys.argv[1], "rb").read().split(b"\n") if l.startswith(b"sample: ")]
assert len(samples) == 1, samples
line = samples[0].decode("utf-8")  # strict: a raw invalid byte fails here
quoted = r'"((?:[^"\\]|\\(?:x[0-9a-f]{2}|[nrt"\\]))*)"'
assert re.fullmatch(f"sample: prompt={quoted} \\| continuation={quoted}", line), line
print("  " + line[:110])
PY

# --generate.prompt_file: the file's text as is (its final newline too), after one bos of the byte tokenizer.
printf 'Dara lives in\n' >"$WORK/prompt.txt"
run gen_file 0 "$RANKTUNE_BIN" generate "$WORK/ckpt" --generate.prompt_file="$WORK/prompt.txt" \
  --generate.max_new_tokens=4
expect gen_file out "on cpu (device=auto: no GPU visible)"
expect gen_file out "after a 15-token prompt"
python3 - "$WORK/gen_file.out" <<'PY' && ok "generate prints the file's prompt as is" || fail "the file's prompt is altered"
import re, sys
m = re.search(rb"^generate: [^\n]*\n(.*)\ngenerated \d+ tokens after", open(sys.argv[1], "rb").read(), re.S | re.M)
sys.exit(0 if m and m.group(1).startswith(b"Dara lives in\n") else 1)
PY
run gen_both 2 "$RANKTUNE_BIN" generate "$WORK/ckpt" --generate.prompt=x --generate.prompt_file="$WORK/prompt.txt"
expect gen_both err "generate.prompt and generate.prompt_file are both given"
run gen_missing 2 "$RANKTUNE_BIN" generate "$WORK/ckpt" --generate.prompt_file="$WORK/none.txt"
expect gen_missing err "generate.prompt_file '$WORK/none.txt' cannot be read: No such file or directory"
: >"$WORK/empty.txt"
run gen_empty 2 "$RANKTUNE_BIN" generate "$WORK/ckpt" --generate.prompt_file="$WORK/empty.txt"
expect gen_empty err "is empty"
run gen_cuda 4 "$RANKTUNE_BIN" generate "$WORK/ckpt" --generate.prompt=x --device=cuda
expect gen_cuda err "device=cuda but no GPU is visible"

# A Llama 3 chat prompt rendered with its <|begin_of_text|>: one bos, so HF's length without special tokens (HF's
# own encode with them doubles it). 1 step with the llama3 fixture tokenizer gives a checkpoint that uses it.
run train_l3 0 "$RANKTUNE_BIN" train --train.steps=1 --data.tokenizer="$llama3_tok" --model.vocab_size=1024 \
  --output_dir="$WORK/run_l3" --checkpoint.dir="$WORK/ckpt_l3"
printf '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n' \
  >"$WORK/chat.txt"
run gen_chat 0 "$RANKTUNE_BIN" generate "$WORK/ckpt_l3" --generate.prompt_file="$WORK/chat.txt" \
  --generate.max_new_tokens=2
python3 - "$llama3_tok" "$WORK/chat.txt" "$WORK/gen_chat.out" <<'PY'
import importlib.util, re, sys
if importlib.util.find_spec("tokenizers") is None:
    print("SKIP: python package tokenizers missing (scripts/setup.sh installs it with transformers)")
    sys.exit(77)
from tokenizers import Tokenizer
tok, text = Tokenizer.from_file(sys.argv[1]), open(sys.argv[2], encoding="utf-8").read()
plain, doubled = len(tok.encode(text, add_special_tokens=False).ids), len(tok.encode(text).ids)
ours = int(re.search(r"after a (\d+)-token prompt", open(sys.argv[3]).read()).group(1))
print(f"  ranktune {ours} tokens, HF without special tokens {plain}, HF with them {doubled} (bos twice)")
sys.exit(0 if ours == plain and doubled == plain + 1 else 1)
PY
case $? in
  0) ok "a prompt that starts with bos gets no second one" ;;
  77) echo "skip: the HF comparison (tokenizers not importable)" ;;
  *) fail "the chat prompt's bos count differs from HF's" ;;
esac
finish
