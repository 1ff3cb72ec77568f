#!/usr/bin/env bash
# Installs what ranktune needs to build and test on Debian/Ubuntu: the apt packages and the LibTorch wheel.
# Idempotent: each step checks first and does nothing when the thing is already there.
# On a cluster use the module files instead (docs/install.md).
set -euo pipefail

TORCH_VERSION=${RANKTUNE_TORCH_VERSION:-2.11.0}
APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools
  libboost-program-options-dev
  libgtest-dev nlohmann-json3-dev
)
# Only for the cluster-integration tests (tests/slurm): a real Slurm and Lmod.
APT_CLUSTER_PACKAGES=(slurm-wlm munge lmod)
# transformers, peft and safetensors: the export test loads ranktune's exports with them (skips without them).
# bitsandbytes (its CPU backend): tests/reference/make_nf4_fixtures.py, the NF4 fixtures' generator.
# gguf (llama.cpp's gguf-py): the GGUF export test reads the exports back with it (skips without it).
PIP_PACKAGES=("torch==${TORCH_VERSION}" "numpy" "h5py" "matplotlib" "transformers>=4.45" "peft>=0.13" "safetensors>=0.4"
              "bitsandbytes==0.50.2" "gguf>=0.17")

say() { printf 'setup: %s\n' "$*"; }

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_apt() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$p"
  done
}

install_apt() {
  local want=("${APT_PACKAGES[@]}")
  if [ "${RANKTUNE_SETUP_CLUSTER:-1}" = 1 ]; then want+=("${APT_CLUSTER_PACKAGES[@]}"); fi
  mapfile -t todo < <(missing_apt "${want[@]}")
  if [ "${#todo[@]}" -eq 0 ]; then say "apt packages present"; return; fi
  say "installing apt packages: ${todo[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq --no-install-recommends "${todo[@]}" >/dev/null
}

python_has() { python3 -c "$1" >/dev/null 2>&1; }

install_pip() {
  if python_has "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '${TORCH_VERSION}')" \
     && python_has "import numpy, h5py, matplotlib, transformers, peft, safetensors, gguf" \
     && python_has "import importlib.metadata as m, sys; sys.exit(m.version('bitsandbytes') != '0.50.2')"; then
    say "python packages present (torch ${TORCH_VERSION}, numpy, h5py, matplotlib, transformers, peft, safetensors," \
        "gguf, bitsandbytes)"; return
  fi
  say "installing python packages: ${PIP_PACKAGES[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
}

# Environment Modules cannot be installed beside lmod (the packages conflict): tests/slurm unpacks its .deb instead.
fetch_env_modules_deb() {
  [ "${RANKTUNE_SETUP_CLUSTER:-1}" = 1 ] || return 0
  local cache=${RANKTUNE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ranktune}/debs
  if compgen -G "$cache/environment-modules_*.deb" >/dev/null; then say "environment-modules .deb cached"; return; fi
  mkdir -p "$cache"
  if (cd "$cache" && apt-get download -qq environment-modules >/dev/null 2>&1); then
    say "environment-modules .deb cached in $cache"
  else
    say "could not download the environment-modules .deb (its test will fail)"
  fi
}

install_apt
install_pip
fetch_env_modules_deb
say "done; torch CMake prefix: $(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')"
