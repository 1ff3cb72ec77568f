# The module file's behaviour under whichever tool the calling test defined `module` for (Lmod or Environment
# Modules): installed with `cmake --install`, it puts the right ranktune on PATH, unloads to exactly the environment
# before, loads site dependencies by name when they exist, refuses a prefix without a binary, and honours
# RANKTUNE_PREFIX. Runs in a clean environment: Lmod de-duplicates PATH entries, so the starting PATH has none.
# shellcheck source=tests/integration/lib.sh
source "$RANKTUNE_SOURCE/tests/integration/lib.sh"
VERSION=$(sed -n 's/^project(ranktune VERSION \([0-9.]*\).*/\1/p' "$RANKTUNE_SOURCE/CMakeLists.txt")
PREFIX=$WORK/prefix

# A fake site tree: gcc and openmpi exist there, cuda, hdf5 and boost do not.
make_site_modules() {
  mkdir -p "$WORK/site/gcc" "$WORK/site/openmpi" "$WORK/site/bin"
  printf '#%%Module1.0\nsetenv SITE_GCC 12.3\nprepend-path PATH %s\n' "$WORK/site/bin" >"$WORK/site/gcc/12.3"
  printf '#%%Module1.0\nsetenv SITE_OPENMPI 4.1.6\n' >"$WORK/site/openmpi/4.1.6"
}

snapshot() { printf '%s\n' "PATH=$PATH" "LD_LIBRARY_PATH=${LD_LIBRARY_PATH-<unset>}" \
  "CMAKE_PREFIX_PATH=${CMAKE_PREFIX_PATH-<unset>}" "RANKTUNE_ROOT=${RANKTUNE_ROOT-<unset>}" \
  "LOADEDMODULES=${LOADEDMODULES:-}" "SITE_GCC=${SITE_GCC-<unset>}"; }

same_env() {
  if diff <(echo "$1") <(snapshot) >"$WORK/envdiff"; then ok "$2: environment as before"; else
    fail "$2: environment differs:"; sed 's/^/    /' "$WORK/envdiff"; fi
}

check_equal() { if [ "$1" = "$2" ]; then ok "$3: $1"; else fail "$3: '$1', expected '$2'"; fi; }

module_checks() {
  local tool=$1 before out
  if [ -f "$RANKTUNE_SOURCE/modules/ranktune/$VERSION" ]; then ok "modules/ranktune/$VERSION matches the project version"
  else fail "no modules/ranktune/$VERSION for project version $VERSION"; fi
  cmake --install "$RANKTUNE_BUILD" --prefix "$PREFIX" >"$WORK/install.log" 2>&1 ||
    { fail "cmake --install failed"; tail "$WORK/install.log"; return; }
  [ -f "$PREFIX/share/modulefiles/ranktune/$VERSION" ] && ok "installed share/modulefiles/ranktune/$VERSION" ||
    fail "cmake --install put no module file in share/modulefiles/ranktune"
  make_site_modules

  module use "$PREFIX/share/modulefiles"
  before=$(snapshot)
  module load ranktune
  check_equal "$?" 0 "$tool: module load ranktune exit status"
  check_equal "$(command -v ranktune)" "$PREFIX/bin/ranktune" "$tool: ranktune on PATH"
  check_equal "${RANKTUNE_ROOT-}" "$PREFIX" "$tool: RANKTUNE_ROOT"
  out=$(ranktune --version 2>&1)
  case "$out" in "ranktune $VERSION ("*) ok "$tool: $out" ;; *) fail "$tool: ranktune --version said: $out" ;; esac
  module unload ranktune
  same_env "$before" "$tool: load + unload"

  # Site dependencies by name: loaded with ranktune when the site has them, unloaded with it unless the user had
  # loaded them, absent ones ignored.
  module use "$WORK/site"
  before=$(snapshot)
  module load ranktune
  case ":${LOADEDMODULES:-}:" in
    *:gcc/12.3:*openmpi/4.1.6:*ranktune/$VERSION:*) ok "$tool: gcc and openmpi loaded as dependencies ($LOADEDMODULES)" ;;
    *) fail "$tool: loaded modules '${LOADEDMODULES:-}', expected gcc/12.3 and openmpi/4.1.6 before ranktune" ;;
  esac
  check_equal "${SITE_GCC-<unset>}" 12.3 "$tool: the gcc module's variable"
  module unload ranktune
  same_env "$before" "$tool: unloading ranktune unloads the dependencies it loaded"
  module load gcc
  before=$(snapshot)
  module load ranktune
  module unload ranktune
  same_env "$before" "$tool: a dependency the user loaded stays loaded"
  module unload gcc

  out=$(module help ranktune 2>&1)
  case "$out" in *"LLM fine-tuning for GPU clusters"*) ok "$tool: module help" ;; *) fail "$tool: module help said: $out" ;; esac

  # A copy that cannot find its binary refuses to load and changes nothing.
  mkdir -p "$WORK/elsewhere/ranktune"
  cp "$PREFIX/share/modulefiles/ranktune/$VERSION" "$WORK/elsewhere/ranktune/"
  module unuse "$PREFIX/share/modulefiles"
  module use "$WORK/elsewhere"
  before=$(snapshot)
  out=$(module load ranktune 2>&1; echo "status=$?")
  module load ranktune >/dev/null 2>&1
  same_env "$before" "$tool: refused load"
  case "$out" in *"no executable at"*"set RANKTUNE_PREFIX"*) ok "$tool: refusal names the fix" ;;
    *) fail "$tool: refusal said: $out" ;; esac
  case "$out" in *"status=0") fail "$tool: refused load returned 0" ;; *) ok "$tool: refused load returned non-zero" ;; esac
  module unuse "$WORK/elsewhere"

  # The source tree's file, pointed at the build tree.
  module use "$RANKTUNE_SOURCE/modules"
  before=$(snapshot)
  RANKTUNE_PREFIX=$RANKTUNE_BUILD module load ranktune
  check_equal "$(command -v ranktune)" "$RANKTUNE_BUILD/bin/ranktune" "$tool: RANKTUNE_PREFIX=<build> module load"
  module unload ranktune
  same_env "$before" "$tool: unload after RANKTUNE_PREFIX (prefix read back from RANKTUNE_ROOT)"
}

# Re-runs the calling test in a clean environment (once).
clean_env() {
  [ -n "${RANKTUNE_CLEAN_ENV:-}" ] && return 0
  exec env -i HOME="$HOME" TMPDIR="${TMPDIR:-/tmp}" PATH=/usr/local/bin:/usr/bin:/bin RANKTUNE_CLEAN_ENV=1 \
    RANKTUNE_BIN="$RANKTUNE_BIN" RANKTUNE_SOURCE="$RANKTUNE_SOURCE" RANKTUNE_BUILD="$RANKTUNE_BUILD" \
    RANKTUNE_CACHE_DIR="${RANKTUNE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ranktune}" bash "$1"
}
