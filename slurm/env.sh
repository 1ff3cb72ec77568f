# shellcheck shell=bash
# ranktune's job environment: the modules to load and the thread counts. Sourced by slurm/*.sbatch; source it in an
# `salloc` shell too. Edit RANKTUNE_MODULES for your site (docs/install.md: the module and its dependencies).
#
#   RANKTUNE_MODULES   modules to load, in order (default: ranktune, whose module loads gcc, cuda, openmpi, hdf5
#                      and boost when the site has modules by those names); "" loads nothing and uses PATH as is
#   OMP_NUM_THREADS    one thread per CPU of the task: the batch scripts set it from SLURM_CPUS_PER_TASK; here it
#                      falls back to that, or 1 outside a job

RANKTUNE_MODULES=${RANKTUNE_MODULES-ranktune}

if [ -n "$RANKTUNE_MODULES" ]; then
  # A batch shell is not a login shell: the `module` function may not be defined yet.
  if ! type module >/dev/null 2>&1; then
    for init in "${LMOD_PKG:-/usr/share/lmod/lmod}/init/bash" /usr/share/modules/init/bash /etc/profile.d/modules.sh; do
      if [ -r "$init" ]; then
        # shellcheck disable=SC1090
        source "$init"
        break
      fi
    done
  fi
  if ! type module >/dev/null 2>&1; then
    echo "ranktune env.sh: no \`module\` command on $(hostname) to load '$RANKTUNE_MODULES'" \
         "(set RANKTUNE_MODULES= to use PATH as it is)" >&2
    return 1
  fi
  # shellcheck disable=SC2086
  module load $RANKTUNE_MODULES || {
    echo "ranktune env.sh: \`module load $RANKTUNE_MODULES\` failed (MODULEPATH=${MODULEPATH:-unset})" >&2
    return 1
  }
fi

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
# BLAS libraries that do not read OMP_NUM_THREADS would otherwise start one thread per core in every rank.
export MKL_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OMP_NUM_THREADS
