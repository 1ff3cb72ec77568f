#!/usr/bin/env bash
# Set up (scripts/setup.sh) and build ranktune into build/ (or $RANKTUNE_BUILD_DIR) with Ninja and ccache.
#   scripts/build.sh [--target NAME]... [CMake configure arguments, e.g. -DCMAKE_BUILD_TYPE=Release]
# --target builds only those targets (run-default.sh: `ranktune`), else everything. One build directory serves both
# README commands: run-default.sh and test.sh ask for the same configuration (tests ON), so neither undoes the
# other's. CMake configures only when the directory is new or an argument asks for a value its cache does not hold;
# otherwise Ninja reruns CMake by itself if a CMakeLists.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=()
while [ "$#" -gt 0 ] && [ "$1" = --target ]; do
  [ "$#" -ge 2 ] || { echo "build.sh: --target needs a target name" >&2; exit 2; }
  targets+=("$2")
  shift 2
done
build=${RANKTUNE_BUILD_DIR:-build}
jobs=${RANKTUNE_JOBS:-$(nproc)}

# configured ARGS...: $build is configured and holds every -DNAME[:TYPE]=VALUE of ARGS (any other argument: no).
configured() {
  [ -f "$build/build.ninja" ] && [ -f "$build/CMakeCache.txt" ] || return 1
  local a
  for a in "$@"; do
    [[ "$a" =~ ^-D([A-Za-z0-9_]+)(:[A-Z]+)?=(.*)$ ]] || return 1
    local held
    held=$(sed -n "s/^${BASH_REMATCH[1]}:[A-Z]*=//p" "$build/CMakeCache.txt" | head -1)
    [ "$held" = "${BASH_REMATCH[3]}" ] || return 1
  done
}

bash scripts/setup.sh
if configured "$@"; then
  echo "build.sh: $build is already configured${*:+ with $*}"
else
  cmake -S . -B "$build" -G Ninja "$@"
fi
cmake --build "$build" -j "$jobs" ${targets[@]+--target "${targets[@]}"}
