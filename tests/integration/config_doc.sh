# docs/configuration.md lists every key with its current default (regenerate with scripts/gen-config-doc.sh).
source "$(dirname "$0")/lib.sh"
doc="$RANKTUNE_SOURCE/docs/configuration.md"
"$RANKTUNE_BIN" train --help | awk '/^  --[a-z0-9_.]+=/ {print $1}' >"$WORK/keys"
while read -r kv; do
  key=${kv%%=*}; key=${key#--}; def=${kv#*=}
  if grep -qF "| \`$key\` | \`$def\` |" "$doc"; then ok "$key documented"; else fail "$key=$def missing or stale in docs/configuration.md (run scripts/gen-config-doc.sh)"; fi
done <"$WORK/keys"
finish
