# modules/ranktune/<version> under Environment Modules 5 (the Tcl implementation; `lmod` and `environment-modules`
# conflict as packages, so its .deb is unpacked, not installed: scripts/setup.sh caches it, or this test fetches it).
source "$RANKTUNE_SOURCE/tests/slurm/modules_lib.sh"
clean_env "$0"
if ! command -v tclsh >/dev/null; then echo "SKIP: tclsh is not installed (Debian: apt-get install tcl)"; exit 77; fi

cache=$RANKTUNE_CACHE_DIR/debs
if ! compgen -G "$cache/environment-modules_*.deb" >/dev/null; then
  mkdir -p "$cache"
  (cd "$cache" && apt-get download -qq environment-modules >/dev/null 2>&1) ||
    { echo "FAIL: no environment-modules .deb in $cache and apt-get download failed (run scripts/setup.sh)"; exit 1; }
fi
deb=$(ls "$cache"/environment-modules_*.deb | sort -V | tail -1)
dpkg -x "$deb" "$WORK/em" || { echo "FAIL: dpkg -x $deb"; exit 1; }
MODCMD=$(find "$WORK/em" -name modulecmd.tcl -type f | head -1)
[ -n "$MODCMD" ] || { echo "FAIL: no modulecmd.tcl in $deb"; exit 1; }
ok "Environment Modules from $(basename "$deb"): $(tclsh "$MODCMD" --version 2>&1 | head -1)"
module() { eval "$(tclsh "$MODCMD" bash "$@")"; }

module_checks "Environment Modules"

# What a site's shell runs: the code modulecmd prints for a load.
out=$(MODULEPATH=$PREFIX/share/modulefiles tclsh "$MODCMD" bash load "ranktune/$VERSION" 2>&1)
case "$out" in *"PATH=$PREFIX/bin:"*"RANKTUNE_ROOT=$PREFIX; export RANKTUNE_ROOT;"*) ok "modulecmd.tcl bash load prints the shell code" ;;
  *) fail "modulecmd.tcl bash load printed: $out" ;; esac
finish
