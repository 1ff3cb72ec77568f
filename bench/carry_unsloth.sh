#!/usr/bin/env bash
# Packs Unsloth and what it needs beyond the GPU machine's image (torch, transformers, peft are there) into
# .deps/unsloth.tar.xz (git-ignored; carried with the checkout), for bench/unsloth_peer.py: the GPU machine has no
# internet. Wheels for CPython 3.12 x86-64 from PyPI, installed without dependencies into one folder; Unsloth's
# studio/ and every bitsandbytes library but CUDA 13 and CPU are dropped (~8 MB packed).
# On the GPU machine bench/train_throughput.sh unpacks it (run "unsloth"); by hand:
#   tar -xJf .deps/unsloth.tar.xz -C /tmp && PYTHONPATH=/tmp/unsloth-site python3 bench/unsloth_peer.py
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(unsloth unsloth_zoo trl datasets dill multiprocess cut_cross_entropy bitsandbytes)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platform=(--python-version 3.12 --only-binary=:all: --platform any --platform manylinux_2_24_x86_64
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download --quiet --no-deps "${platform[@]}" -d "$work/wheels" "${PACKAGES[@]}"
python3 -m pip install --quiet --no-deps "${platform[@]}" --target "$work/unsloth-site" "$work"/wheels/*.whl
site=$work/unsloth-site
rm -rf "$site/studio" "$site/unsloth/studio" "$site/bin"
find "$site/bitsandbytes" -maxdepth 1 -name 'libbitsandbytes_*.so' ! -name '*cuda130*' ! -name '*_cpu.so' -delete
find "$site" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p .deps
ls "$work/wheels" > "$site/WHEELS.txt"
tar -C "$work" -cJf .deps/unsloth.tar.xz unsloth-site
du -h .deps/unsloth.tar.xz
cat "$site/WHEELS.txt"
