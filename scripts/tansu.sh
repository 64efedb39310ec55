#!/usr/bin/env bash
# Installs (once, cached) and starts tansu, a Kafka-compatible broker written in Rust, for the
# end-to-end tests. SQLite storage: tansu 0.6.0's memory engine loses records when a consumer
# resumes from an offset inside a record batch, which at-least-once restarts do all the time.
#
#   scripts/tansu.sh install          build it into $HERALD_TOOLS (default ~/.cache/herald-tools)
#   scripts/tansu.sh path             install if needed, print the binary's path
#   scripts/tansu.sh start DIR        start it on a free loopback port; writes DIR/brokers, DIR/pid
#   scripts/tansu.sh stop DIR         stop the broker started in DIR
set -euo pipefail

TANSU_VERSION=0.6.0
TOOLS=${HERALD_TOOLS:-$HOME/.cache/herald-tools}
BIN=$TOOLS/bin/tansu

install() {
  if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return 0
  fi
  echo "building tansu $TANSU_VERSION (SQLite storage) into $TOOLS; about 10 minutes on 2 cores" >&2
  cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features --features libsql \
    --root "$TOOLS" >&2
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir=$1
  install
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local port
  port=$(free_port)
  local url=tcp://127.0.0.1:$port
  # tansu resolves the SQLite path against its working directory.
  (cd "$dir" && exec "$BIN" broker --listener-url "$url" --advertised-listener-url "$url" \
    --storage-engine "sqlite://tansu.db" >"$dir/tansu.log" 2>&1) &
  echo $! >"$dir/pid"
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "127.0.0.1:$port" >"$dir/brokers"
      echo "127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  echo "tansu did not start listening on $port; log follows" >&2
  cat "$dir/tansu.log" >&2
  return 1
}

stop() {
  local dir=$1
  if [ -f "$dir/pid" ]; then
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
}

case "${1:-}" in
  install) install ;;
  path) install && echo "$BIN" ;;
  start) start "${2:?usage: tansu.sh start DIR}" ;;
  stop) stop "${2:?usage: tansu.sh stop DIR}" ;;
  *) echo "usage: $0 install | path | start DIR | stop DIR" >&2; exit 2 ;;
esac
