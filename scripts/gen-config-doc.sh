#!/usr/bin/env bash
# Regenerates the key table of docs/configuration.md from `ranktune train --help` (the schema is the source of
# truth; tests/integration/config_doc.sh fails when the doc falls behind).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/bin/ranktune}
doc=docs/configuration.md
head=$(sed '/^| key | default | meaning |$/q' "$doc")
{
  printf '%s\n|---|---|---|\n' "$head"
  "$bin" train --help | awk '/^  --[a-z0-9_.]+=/ {
      split($1, kv, "="); key = substr(kv[1], 3); def = substr($1, length(kv[1]) + 2);
      $1 = ""; sub(/^ +/, ""); gsub(/\|/, "\\|");
      printf "| `%s` | `%s` | %s |\n", key, def, $0 }'
} >"$doc.tmp"
mv "$doc.tmp" "$doc"
