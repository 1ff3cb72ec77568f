#!/usr/bin/env bash
# Tokenization speed of `ranktune prepare` against HF `tokenizers` (issue #15 point 8), offline: trains a
# Llama-3-style 128k byte-level BPE on local text, writes ~10 MB of JSONL, then times prepare (1 thread, then every
# CPU, then under `mpirun -np 2` and `-np 4` where the CPUs allow: BENCH_RANKS) and HF encode_batch
# (single-threaded, then every CPU) interleaved, BENCH_REPEATS rounds, medians; the ids of every prepare are checked
# against HF's, an mpirun prepare's file against one process's. Prints the markdown table of docs/benchmarks.md.
# Needs python3 with tokenizers, numpy, h5py. BENCH_DIR keeps the vocabulary and text between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${RANKTUNE_BIN:-build/bin/ranktune}
work=${BENCH_DIR:-/tmp/ranktune-prepare-bench}
python3 bench/prepare_speed.py make "$work"
uptime
python3 bench/prepare_speed.py run "$work" "$bin"
uptime
