# `cmake --install` then find_package(ranktune) from a separate project (tests/slurm/consumer), built against the
# install prefix alone and run at 1 and 2 ranks: the exported package finds its own dependencies.
source "$RANKTUNE_SOURCE/tests/integration/lib.sh"
PREFIX=$WORK/prefix
run install 0 cmake --install "$RANKTUNE_BUILD" --prefix "$PREFIX"
for f in bin/ranktune bin/ranktune-main lib/cmake/ranktune/ranktuneConfig.cmake \
         lib/cmake/ranktune/ranktuneConfigVersion.cmake \
         include/ranktune/distributed/signals.h include/ranktune/version.h share/ranktune/slurm/ddp.sbatch \
         share/ranktune/slurm/env.sh share/ranktune/slurm/requeue.sh share/ranktune/configs/tiny.ini \
         share/modulefiles/ranktune/0.1.0; do
  [ -e "$PREFIX/$f" ] && ok "installed $f" || fail "not installed: $f"
done
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
run configure 0 cmake -S "$RANKTUNE_SOURCE/tests/slurm/consumer" -B "$WORK/consumer" "${generator[@]}" \
  -DCMAKE_PREFIX_PATH="$PREFIX"
run build 0 cmake --build "$WORK/consumer"
run np1 0 "$WORK/consumer/consumer"
expect np1 out "consumer: exit 75 means 'preempted, checkpoint saved'; world 1; no stop requested"
run np2 0 "${MPIRUN[@]}" 2 "$WORK/consumer/consumer"
lines np2 out "world 2; no stop requested" 2
finish
