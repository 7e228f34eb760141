#!/usr/bin/env bash
# Runs Tether with the reference demo's models and scopes on 127.0.0.1:PORT, with a fresh
# data directory, for run-golden.mjs and run-scenarios.mjs:
#   node run-golden.mjs --server-cmd 'tether/serve.sh {port}' --path /jetstream
# TETHER_BIN overrides the binary (default: target/debug/tether of this checkout).
# Extra arguments after the port are appended to the [sync] table (e.g. session_expiry_s=1).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
port="$1"
shift
bin="${TETHER_BIN:-$root/target/debug/tether}"
data="$(mktemp -d "${TMPDIR:-/tmp}/tether-jetstream-XXXXXX")"
trap 'rm -rf "$data"' EXIT
{
    echo '[log]'
    echo 'level = "warn"'
    echo "[sync]"
    echo "schema = \"$here/schema.toml\""
    for kv in "$@"; do echo "$kv"; done
    echo '[[sync.scopes]]'
    echo 'name = "Canvas"'
    echo 'root = "Canvas"'
    echo 'initial = { name = "Shapes Demo" }'
    echo '[[sync.scopes]]'
    echo 'name = "ChatRoom"'
    echo 'root = "ChatRoom"'
    echo 'initial = { name = "Chat Demo" }'
} > "$data/tether.toml"
"$bin" serve --config "$data/tether.toml" --data-dir "$data/db" --listen "127.0.0.1:$port" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT TERM INT
wait $pid
