#!/usr/bin/env bash
# Training throughput, MFU and peak memory on one GPU, ranktune and its peers side by side in one run.
# BENCH_SHAPE=1b (default): the TinyLlama-1.1B shape (d 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632, vocab 32000),
# seq 2048, batch 4: full fine-tune and LoRA r=16 on all linear layers; plus ranktune's DDP path at world size 1
# (NCCL) against plain single-GPU training, Unsloth's LoRA (bf16 and 4-bit base; when .deps/unsloth.tar.xz is there),
# activation checkpointing (run "ac"), and the time of the final checkpoint save of the full fine-tune (weights, fp32
# masters, moments).
# BENCH_SHAPE=8b: the Llama-3-8B shape (d 4096, 32 layers, 8 KV heads, FFN 14336, vocab 128256), seq 2048, batch 2
# (BENCH_BATCH), LoRA and QLoRA with activation checkpointing (runs lora_ac, qlora_ac, lora_offload, qlora_offload;
# lora_part, qlora_part: BENCH_AC_LAYERS of the 32 layers recompute, default 8; lora_fp8: lora_offload with the frozen
# base's matmuls in FP8, train.fp8_matmuls; fp8_curve, either shape: the loss curves with and without it),
# Unsloth's lora_gc/qlora_gc beside them, and "longest": batch 1 at each of LONGEST_SEQS tokens, ranktune's QLoRA and
# LoRA with checkpointed activations offloaded to the host and the MLP tiled (LONGEST_MLP_CHUNK tokens a slice, default
# 8192) beside Unsloth's QLoRA with its offloaded checkpointing. Host memory bounds the offload: 32 layers x 8 KiB a
# token (about 90 GB of pinned memory at 344,064 tokens).
# The 8B rows of every implementation load one random-init model directory written on the GPU by
# bench/peer_common.py (ranktune with data.tokenizer=byte: its rows train the built-in corpus, the peers random tokens).
# Run by bench/gpu_check.sh (RANKTUNE_BENCH=train_throughput.sh) after the build; prints a markdown table.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${RANKTUNE_BIN:-${RANKTUNE_BIN_DIR:-build-gpu/bin}/ranktune}
out=${OUT:-/tmp/ranktune-out}/bench
mkdir -p "$out"
STEPS=${BENCH_STEPS:-14}
SHAPE=${BENCH_SHAPE:-1b}
LONGEST_SEQS=${LONGEST_SEQS:-65536 131072 262144 344064}
common=(--device=cuda --train.log_every=1 --train.eval_every=0 --train.warmup_steps=2 --train.lr=1e-5
  --checkpoint.every_steps=0)
case $SHAPE in
  1b) BATCH=${BENCH_BATCH:-4}
      shape=("${common[@]}" --model.hidden_size=2048 --model.num_layers=22 --model.num_heads=32 --model.num_kv_heads=4
        --model.intermediate_size=5632 --model.vocab_size=32000 --model.tie_embeddings=false
        --model.max_seq_len=2048) ;;
  8b) BATCH=${BENCH_BATCH:-2}
      model_dir=$out/model_8b
      maxseq=2048; for s in $LONGEST_SEQS; do [ "$s" -gt "$maxseq" ] && maxseq=$s; done
      if ! grep -qs "\"max_position_embeddings\": $maxseq," "$model_dir/config.json"; then
        rm -rf "$model_dir"
        python3 bench/peer_common.py "$model_dir" --shape 8b --seq "$maxseq" >"$out/model_8b.log" 2>&1 \
          || { echo "writing the 8B model directory failed:"; tail -5 "$out/model_8b.log"; exit 1; }
      fi
      shape=("${common[@]}" --model.path="$model_dir" --data.tokenizer=byte) ;;
  *) echo "BENCH_SHAPE=$SHAPE: one of 1b, 8b" >&2; exit 2 ;;
esac
# BENCH_SAVE=0 skips the end-of-run checkpoint saves (a short GPU lease).
[ "${BENCH_SAVE:-1}" = 0 ] && shape+=(--checkpoint.at_end=false)

# defaults ARGS...: the options ARGS (a run's own) do not set, since ranktune refuses an option given twice: sequence
# length, micro-batch, steps, and data.packing_attention=shared: the peers train each row as one sequence (random
# tokens, plain causal attention), so ranktune's rows do the same work; "isolated" (the default: documents apart) is
# measured by lora_varlen (the flash kernel's variable-length form, the default on GPU) and lora_isolated (the dense
# per-document mask, train.flash_varlen=false).
defaults() {
  [[ " $* " == *" --data.packing_attention="* ]] || echo --data.packing_attention=shared
  [[ " $* " == *" --train.seq_len="* ]] || echo --train.seq_len=2048
  [[ " $* " == *" --train.micro_batch="* ]] || echo --train.micro_batch="$BATCH"
  [[ " $* " == *" --train.steps="* ]] || echo --train.steps="$STEPS"
}

# ranktune NAME EXTRA...: one run; summary from its metrics (median over steps after the first 4).
ranktune() {
  local name=$1; shift
  rm -rf "$out/$name"
  if ! "$bin" train "${shape[@]}" --output_dir="$out/$name" --checkpoint.dir="$out/$name/ckpt" "$@" \
    $(defaults "$@") >"$out/$name.log" 2>&1; then
    tail -5 "$out/$name.log" >&2
    python3 -c 'import json, sys; print(json.dumps({"impl": "ranktune", "mode": sys.argv[1], "error": sys.argv[2]}))' \
      "$name" "$(grep -aE 'error|out of memory' "$out/$name.log" | tail -1 | cut -c1-240)"
    return
  fi
  local seq=2048; [[ " $* " =~ --train.seq_len=([0-9]+) ]] && seq=${BASH_REMATCH[1]}
  python3 - "$out/$name" "$name" "$out/$name.log" "$seq" <<'PY'
import json, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
steady = rows[4:] or rows
save = re.findall(r"checkpoint: step \d+ -> \S+ \(([\d.]+) MB in ([\d.]+) s\)",
                  open(sys.argv[3], errors="replace").read())
print(json.dumps({"impl": "ranktune", "mode": sys.argv[2],
                  "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in steady)),
                  "mfu": round(statistics.median(r.get("mfu", 0) for r in steady), 4),
                  "peak_gib": round(max(r.get("gpu_mem_gib", 0) for r in rows), 2),
                  "loss": round(rows[-1]["loss"], 4), "seq": int(sys.argv[4]),
                  "save": {"mb": float(save[-1][0]), "s": float(save[-1][1])} if save else None}))
PY
}

# Resume of the full fine-tune's final checkpoint: read + verify time, then two more steps.
resume_full() {
  local -a more=(--train.steps=$((STEPS + 2)) --resume=auto)
  "$bin" train "${shape[@]}" --output_dir="$out/full" --checkpoint.dir="$out/full/ckpt" "${more[@]}" \
    $(defaults "${more[@]}") >"$out/full_resume.log" 2>&1 || { echo "resume failed:"; tail -5 "$out/full_resume.log"; }
  grep -E '^resume: ' "$out/full_resume.log" >&2
  rm -rf "$out/full/ckpt"
}

# profile_shape NAME EXTRA...: Kineto profile of 3 steps after 5 (train.profile_steps, docs/training.md); its
# per-kernel table is copied to $out/profile_kernels_NAME.md, the chrome trace gzipped beside it. Stdout stays JSON.
profile_shape() {
  local name=$1; shift
  rm -rf "$out/profile_$name"
  local -a save=(--checkpoint.at_end=false)
  [ "${BENCH_SAVE:-1}" = 0 ] && save=()  # shape has it already
  set -- --train.steps=8 --train.profile_steps=3 --train.profile_skip=5 "$@"
  "$bin" train "${shape[@]}" "${save[@]}" --output_dir="$out/profile_$name" "$@" $(defaults "$@") >"$out/profile_$name.log" 2>&1 \
    || { echo "profile $name failed:" >&2; tail -5 "$out/profile_$name.log" >&2; return; }
  cp "$out/profile_$name/profile_kernels.md" "$out/profile_kernels_$name.md"
  gzip -f "$out/profile_$name/profile_trace.json"
  sed -n '1,30p' "$out/profile_kernels_$name.md" >&2
}

# Unsloth (LoRA with a bf16 and a 4-bit base) when bench/carry_unsloth.sh has packed it into .deps/; extra arguments
# go to unsloth_peer.py (the longest run's --seq, --batch, --steps).
unsloth_peer() {
  local site=${TMPDIR:-/tmp}/unsloth-site
  [ -d "$site" ] || tar -xJf .deps/unsloth.tar.xz -C "${TMPDIR:-/tmp}" || { echo "unsloth: unpack failed" >&2; return; }
  local -a dir=(); [ "$SHAPE" = 8b ] && dir=(--model-dir "$model_dir")
  PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" UNSLOTH_DISABLE_STATISTICS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    python3 bench/unsloth_peer.py --modes "${UNSLOTH_MODES:-lora,lora_gc,qlora,qlora_gc}" --shape "$SHAPE" \
      --batch "$BATCH" --steps "$((STEPS - 4))" "${dir[@]}" "$@" 2>>"$out/unsloth.log"
}

# longest: batch 1, one step at each of LONGEST_SEQS tokens (a step of 8B at 131072 tokens is about two minutes of
# attention: the row is the peak memory, tokens/s is that one step's); a length that does not fit is a row with its
# error, and longer ones are not tried for that implementation; a length is skipped when less than LONGEST_NEED_S
# (default 240) seconds are left before BENCH_DEADLINE. LONGEST_QLORA=0, LONGEST_LORA=0 and LONGEST_UNSLOTH=0 leave out
# ranktune's 4-bit rows, its 16-bit rows and Unsloth's (its row runs 5 steps: at 131072 tokens and more, minutes each).
longest() {
  local s ok_q=1 ok_l=1 ok_u=1 corpus=$out/longest_corpus.txt
  # The built-in corpus holds one row of 344,064 tokens at most: ranktune's rows train a generated text of four rows
  # of the longest length (byte tokenizer: a byte a token; what the text says changes no memory figure).
  local most=2048; for s in $LONGEST_SEQS; do [ "$s" -gt "$most" ] && most=$s; done
  python3 - "$corpus" "$most" <<'PY'
import random, sys
path, want = sys.argv[1], 4 * int(sys.argv[2])
words = "the of a gradient layer token tensor memory sequence attention model step".split()
rng, lines, size = random.Random(0), [], 0
while size < want:
    lines.append(" ".join(rng.choice(words) for _ in range(150)))
    size += len(lines[-1]) + 1
open(path, "w").write("\n".join(lines))
PY
  for s in $LONGEST_SEQS; do
    if [ $(( ${BENCH_DEADLINE:-9999999999} - $(date +%s) )) -lt "${LONGEST_NEED_S:-240}" ]; then
      echo "skipped longest at $s: deadline" >&2; continue
    fi
    local seq=(--train.seq_len="$s" --train.micro_batch=1 --train.steps=1 --train.activation_checkpointing=true
      --train.activation_offload=true --train.mlp_chunk_tokens="${LONGEST_MLP_CHUNK:-8192}" --data.path="$corpus")
    if [ "$ok_q" = 1 ] && [ "${LONGEST_QLORA:-1}" = 1 ]; then
      ranktune "qlora_offload_$s" "${lora[@]}" --model.quantize=nf4 "${seq[@]}" | tee /dev/stderr \
        | grep -q '"error"' && ok_q=0
    fi
    if [ "$ok_l" = 1 ] && [ "${LONGEST_LORA:-1}" = 1 ]; then
      ranktune "lora_offload_$s" "${lora[@]}" "${seq[@]}" | tee /dev/stderr | grep -q '"error"' && ok_l=0
    fi
    rm -rf "$out"/*_offload_"$s"/ckpt
    if [ "$ok_u" = 1 ] && [ "${LONGEST_UNSLOTH:-1}" = 1 ] && [ -f .deps/unsloth.tar.xz ]; then
      local row; row=$(STEPS=5 UNSLOTH_MODES=qlora_gc unsloth_peer --seq "$s" --batch 1 --warmup 0 | grep '^{')
      [ -n "$row" ] && echo "$row" >&2
      [[ -z "$row" || "$row" == *'"error"'* ]] && ok_u=0  # no row: the peer itself failed (see unsloth.log)
    fi
  done 2>&1 | grep '^{'
}

# HF + PEFT in the modes HF_MODES names (full, lora, qlora; default full,lora). qlora (HF + PEFT + bitsandbytes) takes
# bitsandbytes from the same unpacked Unsloth folder, which only that case puts on PYTHONPATH.
hf_peer() {
  local modes=${HF_MODES:-full,lora} site=${TMPDIR:-/tmp}/unsloth-site path=${PYTHONPATH:-}
  if [[ ",$modes," == *,qlora,* ]]; then
    [ -d "$site" ] || tar -xJf .deps/unsloth.tar.xz -C "${TMPDIR:-/tmp}" || { echo "hf qlora: unpack failed" >&2; return; }
    path="$site${path:+:$path}"
  fi
  PYTHONPATH="$path" python3 bench/hf_peer.py --modes "$modes" --shape "$SHAPE" --batch "$BATCH" \
    --steps "$((STEPS - 4))"
}

default_runs="full resume lora isolated ddp1 hf"
[ -f .deps/unsloth.tar.xz ] && default_runs+=" unsloth"
RUNS=${BENCH_RUNS:-$default_runs}
lora=(--lora.r=16 --lora.alpha=32)
# eager: the unfused reference ops and loss (train.kernels=eager, train.fused_loss=false): the step before the fused
# kernels of issue #17, in the same binary.
eager=(--train.kernels=eager --train.fused_loss=false)
# Runs go in the order BENCH_RUNS names them; with a deadline (BENCH_DEADLINE, set by gpu_check.sh) a run that could
# not finish in 45 s is skipped, and says so.
for run in $RUNS; do
  if [ $(( ${BENCH_DEADLINE:-9999999999} - $(date +%s) )) -lt 45 ]; then echo "skipped $run: deadline" >&2; continue; fi
  case $run in
    full) ranktune full ;;
    full_reference) ranktune full_reference --train.adamw_one_pass=false; rm -rf "$out/full_reference/ckpt" ;;
    resume) resume_full ;;
    lora) ranktune lora "${lora[@]}"; rm -rf "$out/lora/ckpt" ;;
    lora_step_by_step) ranktune lora_step_by_step "${lora[@]}" --train.queue_ahead=false
                       rm -rf "$out/lora_step_by_step/ckpt" ;;
    full_step_by_step) ranktune full_step_by_step --train.queue_ahead=false; rm -rf "$out/full_step_by_step/ckpt" ;;
    qlora) ranktune qlora "${lora[@]}" --model.quantize=nf4; rm -rf "$out/qlora/ckpt" ;;
    eager) ranktune lora_eager "${lora[@]}" "${eager[@]}"; rm -rf "$out/lora_eager/ckpt" ;;
    ddp1) ranktune full_ddp1 --parallel.mode=ddp; rm -rf "$out/full_ddp1/ckpt" ;;
    isolated) ranktune lora_isolated "${lora[@]}" --data.packing_attention=isolated --train.flash_varlen=false
              rm -rf "$out/lora_isolated/ckpt" ;;
    varlen) ranktune lora_varlen "${lora[@]}" --data.packing_attention=isolated --train.flash_varlen=true
            rm -rf "$out/lora_varlen/ckpt" ;;
    ac) ranktune full_ac --train.activation_checkpointing=true; rm -rf "$out/full_ac/ckpt" ;;
    lora_ac) ranktune lora_ac "${lora[@]}" --train.activation_checkpointing=true; rm -rf "$out/lora_ac/ckpt" ;;
    qlora_ac) ranktune qlora_ac "${lora[@]}" --model.quantize=nf4 --train.activation_checkpointing=true
              rm -rf "$out/qlora_ac/ckpt" ;;
    lora_offload) ranktune lora_offload "${lora[@]}" --train.activation_checkpointing=true --train.activation_offload=true
                  rm -rf "$out/lora_offload/ckpt" ;;
    qlora_offload) ranktune qlora_offload "${lora[@]}" --model.quantize=nf4 --train.activation_checkpointing=true \
                     --train.activation_offload=true; rm -rf "$out/qlora_offload/ckpt" ;;
    # Some layers recomputing: BENCH_AC_LAYERS of them (default 8, a quarter of the 8B shape's), the rest keep theirs.
    lora_part) ranktune lora_part "${lora[@]}" --train.activation_checkpointing=true \
                 --train.activation_checkpointing_layers="${BENCH_AC_LAYERS:-8}"; rm -rf "$out/lora_part/ckpt" ;;
    qlora_part) ranktune qlora_part "${lora[@]}" --model.quantize=nf4 --train.activation_checkpointing=true \
                  --train.activation_checkpointing_layers="${BENCH_AC_LAYERS:-8}"; rm -rf "$out/qlora_part/ckpt" ;;
    # The frozen base's matmuls in FP8 (train.fp8_matmuls), with checkpointing offloaded: lora_offload's step otherwise.
    lora_fp8) ranktune lora_fp8 "${lora[@]}" --train.activation_checkpointing=true --train.activation_offload=true \
                --train.fp8_matmuls=true; rm -rf "$out/lora_fp8/ckpt" ;;
    # The loss curves of LoRA with and without train.fp8_matmuls over CURVE_STEPS steps (default 300) of the same data:
    # the issue's condition for the flag. Both rows go to the table; the comparison to stderr.
    fp8_curve)
      for f in false true; do
        ranktune "lora_curve_fp8_$f" "${lora[@]}" --train.steps="${CURVE_STEPS:-300}" --train.warmup_steps=20 \
          --train.lr=2e-4 --train.fp8_matmuls=$f
        rm -rf "$out/lora_curve_fp8_$f/ckpt"
      done
      python3 - "$out"/lora_curve_fp8_{false,true}/metrics.jsonl <<'PY' >&2 ;;
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(f)] for f in sys.argv[1:])
n = min(len(a), len(b))
avg = lambda x, i: sum(x[max(0, i - 19):i + 1]) / len(x[max(0, i - 19):i + 1])
worst = max(abs(avg(a, i) - avg(b, i)) / avg(a, i) for i in range(n))
print("fp8_curve: step, 16-bit loss, FP8 loss (20-step means): " +
      ", ".join(f"{i + 1} {avg(a, i):.4f} {avg(b, i):.4f}" for i in sorted({0, n // 4, n // 2, 3 * n // 4, n - 1})))
print(f"fp8_curve: the largest gap of the 20-step means over {n} steps: {100 * worst:.2f}% of the 16-bit loss")
PY
    longest) longest ;;
    hf) hf_peer ;;
    unsloth) unsloth_peer ;;
    profile) profile_shape lora "${lora[@]}"; profile_shape full ;;
    profile_reference) profile_shape full_reference --train.adamw_one_pass=false ;;
    profile_ac) profile_shape lora_ac "${lora[@]}" --train.activation_checkpointing=true ;;  # the 8B rows' step
    profile_eager) profile_shape lora_eager "${lora[@]}" "${eager[@]}" ;;
    profile_step_by_step) profile_shape lora_step_by_step "${lora[@]}" --train.queue_ahead=false ;;
    *) echo "unknown run $run (full full_reference full_step_by_step resume lora lora_step_by_step qlora eager ddp1" \
         "isolated varlen ac lora_ac qlora_ac lora_offload qlora_offload lora_part qlora_part lora_fp8 fp8_curve longest hf" \
         "unsloth profile profile_reference profile_ac profile_eager profile_step_by_step)" >&2 ;;
  esac
done | tee "$out/results.jsonl"

python3 - "$out/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for r in [r for r in rows if "error" in r]:
    print(f"{r['impl']} {r['mode']} failed: {r['error']}")
rows = [r for r in rows if "error" not in r]
print("\n| impl | mode | seq | tokens/s | MFU | peak GiB |")
print("|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['impl']} | {r['mode']} | {r.get('seq', 2048)} | {r['tokens_per_s']:,} | {100*r['mfu']:.1f}% | "
          f"{r['peak_gib']} |")
# The ratios compare rows of the benchmark's own sequence length; the longest run's rows (other lengths, one step
# each) reuse Unsloth's mode names and would otherwise replace them.
base_seq = min((r.get("seq", 2048) for r in rows), default=2048)
by = {(r["impl"], r["mode"]): r for r in rows if r.get("seq", 2048) == base_seq}
def ratio(a, b, key="tokens_per_s"):
    return by[a][key] / by[b][key] if a in by and b in by else float("nan")
print()
if ("ranktune", "full") in by and ("hf", "full") in by:
    print(f"full: ranktune / HF tokens/s = {ratio(('ranktune','full'), ('hf','full')):.2f}x, "
          f"peak memory {ratio(('ranktune','full'), ('hf','full'), 'peak_gib'):.2f}x")
if ("ranktune", "full_reference") in by:
    print(f"full with the one-pass AdamW (train.adamw_one_pass, the default): "
          f"{ratio(('ranktune','full'), ('ranktune','full_reference')):.3f}x the tokens/s of the reference step")
if ("ranktune", "lora") in by and ("hf+peft", "lora") in by:
    print(f"lora: ranktune / HF+PEFT tokens/s = {ratio(('ranktune','lora'), ('hf+peft','lora')):.2f}x, "
          f"peak memory {ratio(('ranktune','lora'), ('hf+peft','lora'), 'peak_gib'):.2f}x")
if ("unsloth", "lora") in by:
    print(f"lora: ranktune / Unsloth tokens/s = {ratio(('ranktune','lora'), ('unsloth','lora')):.2f}x, "
          f"peak memory {ratio(('ranktune','lora'), ('unsloth','lora'), 'peak_gib'):.2f}x")
for mine, peer in ((("ranktune", "lora_ac"), ("unsloth", "lora_gc")), (("ranktune", "qlora_ac"), ("unsloth", "qlora_gc")),
                   (("ranktune", "lora_offload"), ("unsloth", "lora_gc")),
                   (("ranktune", "qlora_offload"), ("unsloth", "qlora_gc")),
                   (("ranktune", "lora_part"), ("unsloth", "lora_gc")), (("ranktune", "qlora_part"), ("unsloth", "qlora_gc")),
                   (("ranktune", "qlora"), ("unsloth", "qlora_gc")), (("ranktune", "lora_fp8"), ("unsloth", "lora_gc")),
                   (("ranktune", "lora_fp8"), ("ranktune", "lora_offload"))):
    if mine in by and peer in by:
        print(f"{mine[1]}: ranktune / {peer[0]} {peer[1]} tokens/s = {ratio(mine, peer):.2f}x, "
              f"peak memory {ratio(mine, peer, 'peak_gib'):.2f}x")
for peer in (("hf+peft+bnb", "qlora"), ("unsloth", "qlora")):
    if ("ranktune", "qlora") in by and peer in by:
        print(f"qlora: ranktune / {peer[0]} tokens/s = {ratio(('ranktune','qlora'), peer):.2f}x, "
              f"peak memory {ratio(('ranktune','qlora'), peer, 'peak_gib'):.2f}x")
for mode, how in (("lora_varlen", "the flash kernel's variable-length form"), ("lora_isolated", "a dense mask")):
    if ("ranktune", mode) in by:
        print(f"lora with documents kept apart by {how}: "
              f"{ratio(('ranktune', mode), ('ranktune','lora')):.2f}x the tokens/s of one sequence per row")
if ("ranktune", "full_ac") in by:
    print(f"activation checkpointing (full): {ratio(('ranktune','full_ac'), ('ranktune','full')):.2f}x the tokens/s, "
          f"{ratio(('ranktune','full_ac'), ('ranktune','full'), 'peak_gib'):.2f}x the peak memory")
if ("ranktune", "full_ddp1") in by:
    print(f"DDP path at world size 1 costs "
          f"{100*(1-ratio(('ranktune','full_ddp1'), ('ranktune','full'))):.1f}% of throughput")
s = by.get(("ranktune", "full"), {}).get("save")
if s: print(f"final checkpoint of the full fine-tune: {s['mb']/1e3:.1f} GB in {s['s']:.1f} s = {s['mb']/1e3/s['s']:.2f} GB/s")
PY
