# modules/ranktune/<version> under Lmod: load, --version, unload, dependencies, refusal; check_module_tree_syntax
# clean on the installed tree and on the source tree.
source "$RANKTUNE_SOURCE/tests/slurm/modules_lib.sh"
clean_env "$0"
LMOD_INIT=/usr/share/lmod/lmod/init/bash
if [ ! -r "$LMOD_INIT" ]; then echo "SKIP: Lmod is not installed ($LMOD_INIT; Debian: apt-get install lmod)"; exit 77; fi
# shellcheck disable=SC1090
source "$LMOD_INIT"

module_checks Lmod

for tree in "$PREFIX/share/modulefiles" "$RANKTUNE_SOURCE/modules"; do
  out=$("$LMOD_DIR/check_module_tree_syntax" "$tree" 2>&1)
  rc=$?
  if [ "$rc" = 0 ] && grep -q "No errors found" <<<"$out"; then ok "check_module_tree_syntax $tree: clean"
  else fail "check_module_tree_syntax $tree (exit $rc):"; echo "$out" | sed 's/^/    /'; fi
done
finish
