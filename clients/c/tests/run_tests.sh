#!/bin/sh
# Starts a server on a free port with a temporary copy of the example models,
# runs the test binary natively and then under valgrind, then test_install.sh
# (make install into temporary prefixes, programs built with pkg-config), and prints
# "N passed, N failed" (checks from all runs; a valgrind error counts as a failure).
set -u
BIN=${1:-build/test_inferwire}
HERE=$(cd "$(dirname "$0")" && pwd)
SERVER=${INFERWIRE_SERVER:-/tmp/inferwire-server}
MODELS=${INFERWIRE_MODELS:-"$HERE/../../../examples/models"}
TMP=$(mktemp -d)
cp -r "$MODELS" "$TMP/models"
# mlp_held: the mlp, but a request waits up to a second in its queue for others to batch
# with. Requests to it stay queued whatever the machine's speed, so deadlines and
# cancellation can be tested without racing the model.
mkdir -p "$TMP/models/mlp_held/1"
cp "$TMP/models/mlp/1/model.onnx" "$TMP/models/mlp_held/1/model.onnx"
cat >"$TMP/models/mlp_held/config.pbtxt" <<'CONFIG'
name: "mlp_held"
platform: "onnx"
max_batch_size: 64
dynamic_batching { max_queue_delay_us: 1000000 }
CONFIG
"$SERVER" serve --repository "$TMP/models" --host 127.0.0.1 --port 0 2>"$TMP/server.log" &
SPID=$!
cleanup() { kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM
PORT=
for _ in $(seq 100); do
    PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/server.log" | head -n1)
    [ -n "$PORT" ] && break
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$PORT" ]; then
    cat "$TMP/server.log" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
echo "server $SERVER on port $PORT"
P=0; F=0
tally() { # $1 = output file, $2 = exit code
    line=$(tail -n1 "$1")
    p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
    f=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
    if [ -z "$p" ]; then p=0; f=1; fi
    if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    P=$((P + p)); F=$((F + f))
}
echo "== native"
"$BIN" "$PORT" >"$TMP/native.out" 2>&1; rc=$?
cat "$TMP/native.out"; tally "$TMP/native.out" $rc
if [ "${NO_VALGRIND:-0}" != 1 ]; then
    echo "== valgrind --leak-check=full --error-exitcode=1"
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
        --error-exitcode=1 "$BIN" "$PORT" >"$TMP/vg.out" 2>&1; rc=$?
    cat "$TMP/vg.out"; tally "$TMP/vg.out" $rc
    [ $rc -ne 0 ] && echo "valgrind: exit code $rc"
fi
echo "== install (tests/test_install.sh)"
"$HERE/test_install.sh" "$PORT" >"$TMP/install.out" 2>&1; rc=$?
cat "$TMP/install.out"; tally "$TMP/install.out" $rc
echo "$P passed, $F failed"
[ "$F" -eq 0 ]
