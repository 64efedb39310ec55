#!/usr/bin/env bash
# The API contract test: serves `herald dev` on a free port and runs schemathesis (a
# property-based tester) against the OpenAPI document it serves: every operation with
# generated and fuzzed requests, every answer checked against the document (status codes,
# headers, content types, bodies), no 5xx, valid data accepted and invalid data refused.
#   scripts/api_contract.sh [path/to/herald] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
herald=${1:-target/debug/herald}
budget=${2:-180}
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-api.txt

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
base="http://127.0.0.1:$port"
workdir=$(mktemp -d)
(cd "$workdir" && exec "$OLDPWD/$herald" dev --http "127.0.0.1:$port" >dev.log 2>&1) &
dev=$!
trap 'kill $dev 2>/dev/null || true; wait $dev 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "$base/readyz" >/dev/null && break
  kill -0 $dev 2>/dev/null || { cat "$workdir/dev.log"; echo "herald dev exited"; exit 1; }
  sleep 1
done
curl -sf "$base/readyz" >/dev/null || { cat "$workdir/dev.log"; echo "herald dev never got ready"; exit 1; }

# The credentials `herald dev` prints: the example workspace's publishable key and the dev
# admin token (write scope).
export HERALD_PUBLISHABLE_KEY=pk_dev_academyflow_7Qm2xR9vLk
export HERALD_ADMIN_TOKEN=herald_dev_admin_token_not_for_production
python3 -m schemathesis.cli --config-file scripts/schemathesis.toml --no-color run \
  "$base/openapi.json" --max-time "$budget" --seed 1
