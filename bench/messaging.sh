#!/usr/bin/env bash
# Messaging service benchmark (make bench-messaging). Builds the service, then
# runs bench/messaging_bench.erl in one Erlang VM that hosts the service and
# drives it: in-VM routing, wrk against POST /messages with nginx as anchor,
# durable batches, POST->WebSocket latency, and 20,000 idle WebSockets.
# Everything listens on 127.0.0.1 only; each step is bounded in time.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

# 20,000 WebSockets are 40,000 sockets here (both ends live on this machine).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
    if [ "$(id -u)" = 0 ]; then
        echo "==> installing wrk and nginx-light"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends wrk nginx-light >/dev/null
    else
        echo "wrk and nginx are needed: apt-get install wrk nginx-light" >&2
        exit 1
    fi
fi

echo "==> building erlang_messaging"
(cd erlang_messaging && rebar3 compile)

WORK="$(mktemp -d /tmp/messaging-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
erlc -o "$WORK" bench/messaging_bench.erl

# +Q: ports for 40,000 sockets plus headroom; +K/+A defaults are fine on OTP 25.
erl -noshell +Q 131072 +P 1048576 \
    -pa erlang_messaging/_build/default/lib/*/ebin -pa "$WORK" \
    -run messaging_bench main "$WORK"
