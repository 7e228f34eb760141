#!/usr/bin/env bash
# tests/jetstream/ci.sh: the Jetstream conformance run (called by scripts/test, step
# `jetstream`). Needs node >= 20.10 and npm, and a built `tether` binary (TETHER_BIN,
# default target/debug/tether).
#
#  1. npm ci: jetstream@0.13.4 (the reference server and its bundled JS client).
#  2. Golden traces against the reference server: the recorded traces still describe it.
#  3. The same traces against Tether: equal, apart from the deliberate differences in
#     golden/tether/ (each script says why; docs/dialects/jetstream.md lists them).
#  4. The real JS client against Tether: two clients, revert on rejection, resume after a
#     dropped socket, atomic changesets, a refused fetch.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"
export TETHER_BIN="${TETHER_BIN:-$root/target/debug/tether}"
[[ -x "$TETHER_BIN" ]] || { echo "error: no tether binary at $TETHER_BIN (cargo build -p tether-server)" >&2; exit 1; }

echo "--- npm ci (tests/jetstream)"
npm ci --omit=dev --no-audit --no-fund --loglevel=error

echo "--- golden traces against the reference server"
node run-golden.mjs

echo "--- golden traces against Tether"
node run-golden.mjs --variant golden/tether --server-cmd "$here/tether/serve.sh {port}" \
    --server-arg-map tether/server-args.json --path /jetstream

echo "--- the real JS client against Tether"
port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
"$here/tether/serve.sh" "$port" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
# resume-no-shim and dates are limits of the reference's client (no token on reconnect;
# epoch seconds read as milliseconds), the same against the reference server: see README.
node run-scenarios.mjs --url "ws://127.0.0.1:$port/jetstream" two-clients reject-revert resume atomic fetch-denied
