#!/usr/bin/env bash
# Packs what the GPU machine lacks into .deps/ (git-ignored: copy it to the GPU machine with the checkout):
#  - Boost.Program_options: the headers our sources actually include (their closure, ~3 MB, not all of Boost), the
#    static library and Debian's CMake package files, in Debian's layout so the package's relative paths hold;
#  - nlohmann-json: the headers and its CMake package.
# Source: this machine's Debian packages (scripts/setup.sh installs them). Use with
#   cmake ... -DBoost_DIR=$PWD/.deps/usr/lib/x86_64-linux-gnu/cmake/Boost-1.74.0 -DRANKTUNE_BOOST_STATIC=ON \
#             -Dnlohmann_json_DIR=$PWD/.deps/usr/share/cmake/nlohmann_json
set -euo pipefail
cd "$(dirname "$0")/.."
out=.deps/usr
rm -rf .deps
mkdir -p "$out/include" "$out/lib/x86_64-linux-gnu/cmake" "$out/share/cmake"
multiarch=/usr/lib/x86_64-linux-gnu

# Header closure of every translation unit that includes Boost.
mapfile -t tus < <(grep -rl --include='*.cpp' '#include <boost/' src tests 2>/dev/null || true)
for tu in "${tus[@]}"; do
  g++ -std=c++20 -M -Iinclude -Ibuild/include "$tu" 2>/dev/null | tr ' \\' '\n\n' | grep '^/usr/include/boost/' || true
done | sort -u | while read -r h; do
  mkdir -p "$out/include/$(dirname "${h#/usr/include/}")"
  cp "$h" "$out/include/${h#/usr/include/}"
done
cp "$multiarch/libboost_program_options.a" "$out/lib/x86_64-linux-gnu/"
for d in Boost-1.74.0 boost_headers-1.74.0 boost_program_options-1.74.0; do
  cp -r "$multiarch/cmake/$d" "$out/lib/x86_64-linux-gnu/cmake/"
done
cp "$multiarch/cmake/BoostDetectToolset-1.74.0.cmake" "$out/lib/x86_64-linux-gnu/cmake/"
rm -f "$out"/lib/x86_64-linux-gnu/cmake/boost_program_options-1.74.0/*variant-shared.cmake

cp -r /usr/include/nlohmann "$out/include/"
cp -r /usr/share/cmake/nlohmann_json "$out/share/cmake/"
du -sh .deps
