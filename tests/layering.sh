#!/usr/bin/env bash
# The layering test: the edges allowed between layers are read from docs/architecture.md (the table under
# "## Layers", column "may include"), and every `#include "ranktune/<layer>/..."` in src/ and include/ is checked
# against them. Also: no <mpi.h> and no MPI_ identifier outside distributed/, and the layers marked pure in the
# table include no LibTorch, CUDA or MPI header. Prints every violation; exits 1 if there is one.
set -euo pipefail
root=${RANKTUNE_SOURCE:-$(cd "$(dirname "$0")/.." && pwd)}
doc=$root/docs/architecture.md
cd "$root"

# Table rows look like: | `model` | `src/model`, ... | what | `core`, `kernels` | LibTorch |
# Column 2 is the layer, column 5 the ranktune layers (or layer/file.h) it may include, column 6 what else it may use.
declare -A allowed pure
layers=()
in_table=0
while IFS= read -r line; do
  case $line in
    "## Layers"*) in_table=1; continue ;;
    "## "*) [ "$in_table" = 1 ] && break ;;
  esac
  [ "$in_table" = 1 ] || continue
  [[ $line == '| `'* ]] || continue
  IFS='|' read -r _ c_layer _ _ c_may c_uses _ <<<"$line"
  layer=$(grep -oE '`[a-z_]+`' <<<"$c_layer" | head -1 | tr -d '`')
  [ -n "$layer" ] || continue
  layers+=("$layer")
  allowed[$layer]=" $( (grep -oE '`[a-z_./]+`' <<<"$c_may" || true) | tr -d '`' | tr '\n' ' ')"
  if grep -qi 'standard library only\|pure' <<<"$c_uses"; then pure[$layer]=1; fi
done <"$doc"

if [ "${#layers[@]}" -lt 5 ]; then
  echo "layering: could not read the layer table from $doc (found ${#layers[@]} layers)" >&2
  exit 1
fi

fail=0
violation() { echo "layering: $*"; fail=1; }

# Every folder under src/ and include/ranktune/ must be a layer of the table (a new folder needs a row).
for d in src/*/ include/ranktune/*/; do
  name=$(basename "$d")
  [[ " ${layers[*]} " == *" $name "* ]] || violation "$d is not a layer of docs/architecture.md's table"
done

for layer in "${layers[@]}"; do
  for dir in "src/$layer" "include/ranktune/$layer"; do
    [ -d "$dir" ] || continue
    while IFS= read -r hit; do
      file=${hit%%:*}
      rest=${hit#*:}
      lineno=${rest%%:*}
      target=$(sed -E 's#.*"ranktune/([a-z_]+/[A-Za-z0-9_./]+)".*#\1#' <<<"$rest")
      other=${target%%/*}
      [ "$other" = "$layer" ] && continue
      [[ ${allowed[$layer]} == *" all "* ]] && continue
      if [[ ${allowed[$layer]} == *" $other "* || ${allowed[$layer]} == *" $target "* ]]; then continue; fi
      violation "$file:$lineno: $layer may not include ranktune/$target (allowed: ${allowed[$layer]# })"
    done < <(grep -rnE '^\s*#\s*include\s+"ranktune/[a-z_]+/' "$dir" || true)
    if [ "${pure[$layer]:-0}" = 1 ]; then
      while IFS= read -r hit; do
        violation "$hit: the pure layer $layer includes a LibTorch/CUDA/MPI header"
      done < <(grep -rnE '^\s*#\s*include\s+[<"](torch/|ATen/|c10/|cuda|mpi\.h|nccl)' "$dir" || true)
    fi
  done
done

# MPI lives in distributed/ only: everything else meets other ranks through host collectives or a Communicator.
# As strict as `git grep MPI_ -- src include`: comments and launcher variables (OMPI_*) included, so a reader
# finds every MPI fact in one folder.
while IFS= read -r hit; do
  violation "$hit: MPI outside distributed/ (use ranktune/distributed/host_collectives.h)"
done < <(grep -rnE 'MPI_|#\s*include\s+[<"]mpi\.h' src include \
           | grep -vE '^(src/distributed|include/ranktune/distributed)/' || true)

if [ "$fail" = 0 ]; then
  echo "layering: ${#layers[@]} layers, every include follows docs/architecture.md; MPI only in distributed/"
fi

# The check must be able to fail: a copy of the tree with one upward include and one MPI call in train/ is refused.
if [ "$fail" = 0 ] && [ -z "${RANKTUNE_LAYERING_SELF_TEST:-}" ]; then
  copy=$(mktemp -d)
  trap 'rm -rf "$copy"' EXIT
  cp -r docs src include "$copy/"
  echo '#include "ranktune/train/trainer.h"' >>"$copy/src/model/llama.cpp"
  echo 'int x = MPI_COMM_WORLD;' >>"$copy/src/train/trainer.cpp"
  if out=$(RANKTUNE_LAYERING_SELF_TEST=1 RANKTUNE_SOURCE=$copy bash "$0" 2>&1); then
    echo "layering: the self-test tree with injected violations passed: the check is broken"; fail=1
  elif ! grep -q 'model may not include ranktune/train/trainer.h' <<<"$out" || ! grep -q 'MPI outside' <<<"$out"; then
    echo "layering: the self-test did not name both injected violations:"; echo "$out"; fail=1
  else
    echo "layering: self-test: an injected upward include and an MPI call outside distributed/ are caught"
  fi
fi
exit "$fail"
