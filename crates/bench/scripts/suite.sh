#!/usr/bin/env bash
# Runs the scenarios recorded in docs/benchmarks.md and appends one JSON line per run to
# $OUT (default: target/bench-results.jsonl). Every run spawns its own server on a free port.
#
#   cargo build --release -p tether-server -p tether-bench
#   crates/bench/scripts/suite.sh            # all scenarios
#   crates/bench/scripts/suite.sh fanout     # only those whose name starts with "fanout"
set -euo pipefail
cd "$(dirname "$0")/../../.."
B=target/release/tether-bench
S=target/release/tether
OUT=${OUT:-target/bench-results.jsonl}
ONLY=${1:-}

run() {
  local name=$1; shift
  [[ -n "$ONLY" && "$name" != "$ONLY"* ]] && return 0
  echo "### $name: uptime $(uptime | sed 's/.*load/load/')" >&2
  "$B" "$@" --spawn-server "$S" --json --quiet | sed "s/^{/{\"run\":\"$name\",/" >> "$OUT"
  sleep 2
}

# Scenarios that need no server (in-process).
run_local() {
  local name=$1; shift
  [[ -n "$ONLY" && "$name" != "$ONLY"* ]] && return 0
  echo "### $name: uptime $(uptime | sed 's/.*load/load/')" >&2
  "$B" "$@" --json --quiet | sed "s/^{/{\"run\":\"$name\",/" >> "$OUT"
  sleep 2
}

run fanout-10k-rate100      fanout --subscribers 10000 --rate 100 --duration 15
run fanout-10k-flat16       fanout --subscribers 10000 --flat-out --window 16 --duration 15
run fanout-10k-rate5        fanout --subscribers 10000 --rate 5 --duration 15
run fanout-10k-rate1        fanout --subscribers 10000 --rate 1 --duration 15
run fanout-10k-http-rate5   fanout --subscribers 10000 --rate 5 --duration 15 --publish-via http
run fanout-1k-rate100       fanout --subscribers 1000 --rate 100 --duration 15
run channels-1000x10-rate5000  channels --channels 1000 --subscribers-per-channel 10 --rate 5000 --duration 15
run channels-1000x10-flat      channels --channels 1000 --subscribers-per-channel 10 --flat-out --window 4 --duration 15
run channels-10000x1-rate20000 channels --channels 10000 --subscribers-per-channel 1 --rate 20000 --duration 15
run http-c16                http --requests 300000 --concurrency 16
run http-c32                http --requests 300000 --concurrency 32
run http-c64                http --requests 300000 --concurrency 64
# 18,000: each process may hold at most 20,000 open files on the benchmark machine.
run idle-18k-shared         idle --connections 18000 --source-ips 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4 --hold 35
run idle-18k-own            idle --connections 18000 --channel-per-connection --source-ips 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4 --hold 35
# Auth (docs/benchmarks.md § Auth).
run_local auth-verify       auth-verify
run storm-jwt-c500          connect-storm --connections 10000 --connect-concurrency 500
run storm-jwt-c1000         connect-storm --connections 10000 --connect-concurrency 1000
run storm-jwt-c100          connect-storm --connections 10000 --connect-concurrency 100
run storm-session-c500      connect-storm --token session --connections 10000 --connect-concurrency 500
run storm-session-c1000     connect-storm --token session --connections 10000 --connect-concurrency 1000
run storm-session-c100      connect-storm --token session --connections 10000 --connect-concurrency 100
run login-c1                login --concurrency 1 --duration 20
run login-c4                login --concurrency 4 --duration 20
run login-c16               login --concurrency 16 --duration 20
# Model sync (docs/benchmarks.md § Model sync (Jetstream)). --compare-reference needs Node and
# `cd tests/jetstream && npm ci --omit=dev` once.
run jetstream-sync          jetstream-sync --compare-reference
run jetstream-thr-p256      jetstream-sync --phases throughput --pipeline 256 --compare-reference
run jetstream-lat-1k        jetstream-sync --phases latency --rate 1000 --compare-reference
run jetstream-lat-10k-r10   jetstream-sync --phases latency --receivers 10
