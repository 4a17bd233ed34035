#!/bin/sh
# Starts servers on free ports with a temporary copy of the example models: the plaintext
# one, and for the TLS and authentication tests TLS servers (a good certificate, an expired
# one, one from another CA, one for another host name), mutual-TLS servers and a server
# with a token file, from certificates and tokens made here; for the reconnection tests
# servers that end idle connections after 0.3 s (plaintext, tokens, TLS) and one that the
# tests have stopped and started again on the same port (see run_bin), and one that logs
# every infer request (--access-log-rate 1) for the trace context test. Then runs the test
# binary natively and under valgrind, then test_install.sh (make install into temporary
# prefixes, programs built with pkg-config), and prints "N passed, N failed" (checks from
# all runs; a valgrind error counts as a failure).
set -u
BIN=${1:-build/test_inferwire}
HERE=$(cd "$(dirname "$0")" && pwd)
SERVER=${INFERWIRE_SERVER:-/tmp/inferwire-server}
MODELS=${INFERWIRE_MODELS:-"$HERE/../../../examples/models"}
TMP=$(mktemp -d)
PIDS=
cleanup() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null; done
    for pid in $PIDS; do wait "$pid" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
fail_setup() { echo "$*" >&2; echo "0 passed, 1 failed"; exit 1; }

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

# --- certificates (EC P-256), made with the openssl command
PKI=$TMP/pki
mkdir -p "$PKI/newcerts"
: >"$PKI/index.txt"
echo 1000 >"$PKI/serial"
cat >"$PKI/openssl.cnf" <<CNF
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ server_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[ wronghost_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:other.example
[ client_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
# for 'openssl ca', which (unlike 'openssl x509 -req') can set a validity in the past
[ ca ]
default_ca = test_ca
[ test_ca ]
database = $PKI/index.txt
new_certs_dir = $PKI/newcerts
serial = $PKI/serial
certificate = $PKI/ca.pem
private_key = $PKI/ca.key
default_md = sha256
policy = any_name
unique_subject = no
[ any_name ]
commonName = supplied
CNF
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$1.key"; }
csr() { newkey "$1" && openssl req -new -config "$PKI/openssl.cnf" -key "$PKI/$1.key" -subj "/CN=$2" -out "$PKI/$1.csr"; }
make_ca() { # name, common name
    newkey "$1" && openssl req -new -x509 -config "$PKI/openssl.cnf" -key "$PKI/$1.key" \
        -subj "/CN=$2" -extensions ca_ext -days 30 -out "$PKI/$1.pem"
}
make_cert() { # name, common name, signing CA, extensions section
    csr "$1" "$2" && openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$3.pem" -CAkey "$PKI/$3.key" \
        -set_serial "0x$(openssl rand -hex 8)" -days 30 -sha256 \
        -extfile "$PKI/openssl.cnf" -extensions "$4" -out "$PKI/$1.pem"
}
{
    make_ca ca "InferWire Test CA" &&
    make_ca otherca "Some Other CA" &&
    make_cert server localhost ca server_ext &&
    make_cert wrongca localhost otherca server_ext &&
    make_cert wronghost other.example ca wronghost_ext &&
    make_cert client ci-runner ca client_ext &&
    make_cert otherclient ci-runner otherca client_ext &&
    csr expired localhost &&
    openssl ca -batch -config "$PKI/openssl.cnf" -notext -extfile "$PKI/openssl.cnf" \
        -extensions server_ext -startdate 20200101000000Z -enddate 20200201000000Z \
        -in "$PKI/expired.csr" -out "$PKI/expired.pem"
} >"$TMP/pki.log" 2>&1 || { cat "$TMP/pki.log" >&2; fail_setup "cannot make the test certificates"; }

# --- tokens: the token file holds their SHA-256, the tests get them through the environment
token() { echo "tok-$1-$(openssl rand -hex 16)"; }
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
IW_TOKEN_ADMIN=$(token admin)
IW_TOKEN_INFER=$(token infer)
IW_TOKEN_MANAGE=$(token manage)
cat >"$TMP/tokens" <<TOKENS
# test credentials: token <sha256> <principal> <roles> [<models>]
token $(sha "$IW_TOKEN_ADMIN") ci-admin infer,manage,admin
token $(sha "$IW_TOKEN_INFER") ci-infer infer add_sub,ident*
token $(sha "$IW_TOKEN_MANAGE") ci-manager manage
certificate ci-runner infer
TOKENS

# --- servers
# start NAME [serve flags...]: starts a server on a free port, logging to $TMP/NAME.log
start() {
    name=$1; shift
    "$SERVER" serve --repository "$TMP/models" --host 127.0.0.1 --port 0 --http-port 0 "$@" 2>"$TMP/$name.log" &
    eval "PID_$name=$!"
    PIDS="$PIDS $!"
}
# port_of NAME: waits (up to 30 s) for the server's "listening on" line; prints the port
port_of() {
    pid=$(eval echo "\$PID_$1")
    end=$(($(date +%s) + 30))
    while [ "$(date +%s)" -le "$end" ]; do
        p=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/$1.log" | head -n1)
        [ -n "$p" ] && { echo "$p"; return 0; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "server $1 did not start:" >&2
    cat "$TMP/$1.log" >&2
    return 1
}
TLS="--tls-cert $PKI/server.pem --tls-key $PKI/server.key"
start plain
start tls $TLS
start tls_expired --tls-cert "$PKI/expired.pem" --tls-key "$PKI/expired.key"
start tls_wrong_ca --tls-cert "$PKI/wrongca.pem" --tls-key "$PKI/wrongca.key"
start tls_wrong_host --tls-cert "$PKI/wronghost.pem" --tls-key "$PKI/wronghost.key"
start mtls $TLS --tls-client-ca "$PKI/ca.pem"
start mtls_auth $TLS --tls-client-ca "$PKI/ca.pem" --token-file "$TMP/tokens"
start auth --token-file "$TMP/tokens"
start idle --idle-timeout 0.3
start idle_auth --idle-timeout 0.3 --token-file "$TMP/tokens"
start idle_tls $TLS --idle-timeout 0.3
start restart --shutdown-timeout 2
start traced --access-log-rate 1
PORT=$(port_of plain) || fail_setup "no plaintext server"
for s in tls tls_expired tls_wrong_ca tls_wrong_host mtls mtls_auth auth idle idle_auth idle_tls restart traced; do
    p=$(port_of $s) || fail_setup "no $s server"
    var=IW_PORT_$(echo "$s" | tr a-z A-Z)
    eval "$var=$p"
    export "$var"
done
export IW_PKI="$PKI" IW_TOKEN_ADMIN IW_TOKEN_INFER IW_TOKEN_MANAGE
export IW_LOG_TRACED="$TMP/traced.log" # its access log: every infer request, with trace ids
echo "server $SERVER on port $PORT (TLS $IW_PORT_TLS, mTLS $IW_PORT_MTLS, tokens $IW_PORT_AUTH, restarted $IW_PORT_RESTART)"

# --- the server the restart test stops and starts again, on the same port
RESTART_UP=1
restart_stop() { # SIGTERM (the server says GOAWAY to its connections), then wait for its exit
    [ "$RESTART_UP" = 1 ] || return 0
    kill "$PID_restart" 2>/dev/null
    # bounded: --shutdown-timeout 2 lets it finish; should it hang, SIGKILL after 20 s
    ( sleep 20; kill -KILL "$PID_restart" 2>/dev/null ) &
    dog=$!
    wait "$PID_restart" 2>/dev/null
    kill "$dog" 2>/dev/null
    wait "$dog" 2>/dev/null
    PIDS=$(echo " $PIDS " | sed "s/ $PID_restart / /")
    RESTART_UP=0
}
restart_start() {
    [ "$RESTART_UP" = 0 ] || return 0
    start restart --shutdown-timeout 2 --port "$IW_PORT_RESTART"
    RESTART_UP=1
    p=$(port_of restart) && [ "$p" = "$IW_PORT_RESTART" ]
}
# run_bin OUTPUT COMMAND...: runs the test binary in the background and, until it exits,
# serves its requests to stop and start the "restart" server: it writes "stop" or "start"
# (a line) to the FIFO $IW_CTL and waits for "ok" (or "failed") on the FIFO $IW_ACK. This
# shell keeps both FIFOs open read-write, so no open() blocks on either side, and the
# binary's exit (however it ends) is a line on $IW_CTL too. Returns the binary's exit code.
IW_CTL=$TMP/ctl IW_ACK=$TMP/ack
export IW_CTL IW_ACK
run_bin() {
    out=$1; shift
    rm -f "$IW_CTL" "$IW_ACK"
    mkfifo "$IW_CTL" "$IW_ACK" || return 1
    exec 8<>"$IW_CTL" 9<>"$IW_ACK"
    restart_start || echo "cannot start the restart server" >&2 # a failed run may have left it down
    ( "$@" >"$out" 2>&1 8>&- 9>&-; echo "exit $?" >&8 ) &
    bin=$!
    status=1
    while read -r cmd arg <&8; do
        case $cmd in
        stop) if restart_stop; then echo ok >&9; else echo failed >&9; fi ;;
        start) if restart_start; then echo ok >&9; else echo failed >&9; fi ;;
        exit) status=$arg; break ;;
        esac
    done
    wait "$bin"
    exec 8>&- 9>&-
    return "$status"
}

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
run_bin "$TMP/native.out" timeout 600 "$BIN" "$PORT"; rc=$?
cat "$TMP/native.out"; tally "$TMP/native.out" $rc
if [ "${NO_VALGRIND:-0}" != 1 ]; then
    echo "== valgrind --leak-check=full --error-exitcode=1"
    run_bin "$TMP/vg.out" timeout 1800 valgrind -q --leak-check=full \
        --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=1 "$BIN" "$PORT"; rc=$?
    cat "$TMP/vg.out"; tally "$TMP/vg.out" $rc
    [ $rc -ne 0 ] && echo "valgrind: exit code $rc"
fi
echo "== install (tests/test_install.sh)"
"$HERE/test_install.sh" "$PORT" >"$TMP/install.out" 2>&1; rc=$?
cat "$TMP/install.out"; tally "$TMP/install.out" $rc
echo "$P passed, $F failed"
[ "$F" -eq 0 ]
