#!/bin/sh
# Installs libinferwire into temporary prefixes and builds programs against it
# the way a user would: with nothing but pkg-config's flags.
# Usage: test_install.sh [port]   (with a port, infer_once also talks to that server)
# Prints one line per check (with the output of failed ones) and a final "N passed, N failed".
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
MAKE=${MAKE:-make}
CC=${CC:-cc}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
PORT=${1:-}
# Variables from an outer `make test VAR=...` (MAKEFLAGS) or the environment
# would override the prefixes below: drop them so only what we pass counts.
unset MAKEFLAGS MFLAGS MAKELEVEL DESTDIR LIBDIR INCLUDEDIR PKGCONFIGDIR SHARED
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM

P=0; F=0
# check <what> <command...>: the command must succeed; its output is shown only on failure.
# Everything a check depends on runs inside its command, so nothing passes vacuously.
check() {
    what=$1; shift
    if "$@" >"$TMP/check.out" 2>&1; then
        P=$((P + 1))
        echo "ok   $what"
    else
        F=$((F + 1))
        echo "FAIL $what"
        sed 's/^/    /' "$TMP/check.out"
    fi
}
run_make() { "$MAKE" -C "$SRC" --no-print-directory "$@"; }
same() { [ "$1" = "$2" ] || { echo "got '$1', want '$2'"; return 1; }; }
# prints <expected> <command...>: the command succeeds and prints exactly that
# (trailing blanks aside: pkg-config ends its flags with one).
prints() {
    want=$1; shift
    out=$("$@") || { echo "$out"; echo "(failed)"; return 1; }
    same "$(printf '%s\n' "$out" | sed 's/[[:blank:]]*$//')" "$want"
}
# has_flags <wanted flags> <command...>: the command succeeds and prints each wanted flag
# (openssl's own private flags, such as -ldl, vary between systems).
has_flags() {
    want=$1; shift
    out=$("$@") || { echo "$out"; echo "(failed)"; return 1; }
    for w in $want; do
        echo " $out " | grep -q -- " $w " || { echo "got '$out', missing $w"; return 1; }
    done
}
is_link_to() { [ -L "$1" ] || { echo "$1: not a symlink"; return 1; }; same "$(readlink "$1")" "$2"; }
dyn() { # dyn <elf> <TAG>: the values of that dynamic tag, one a line
    [ -f "$1" ] || { echo "$1: missing"; return 1; }
    readelf -d "$1" | sed -n "s/.*($2).*\[\(.*\)\]/\1/p"
}
needs() { list=$(dyn "$1" NEEDED) || return 1; echo "$list" | grep -qx "$2" || { echo "NEEDED: $list"; return 1; }; }
needs_no() { list=$(dyn "$1" NEEDED) || return 1; ! echo "$list" | grep -q "$2" || { echo "NEEDED: $list"; return 1; }; }
# pc <prefix> <pkg-config args...>: that prefix's inferwire.pc, found through PKG_CONFIG_PATH only.
pc() { p=$1; shift; PKG_CONFIG_PATH="$p/lib/pkgconfig" "$PKG_CONFIG" "$@" inferwire; }
# build <output> <source> <prefix> <--static or ""> [cflags...]: compile and link with pc's
# flags, strictly, and with no -I into this source tree (the installed header must do).
build() {
    o=$1; src=$2; p=$3; st=$4; shift 4
    flags=$(pc "$p" --cflags $st --libs) || return 1
    $CC -std=c11 -Wall -Wextra -Werror -pedantic "$@" "$src" $flags -o "$o"
}
# answers <binary>: infer_once's add_sub answer for its fixed inputs, from the test server.
answers() {
    out=$("$@" 127.0.0.1 "$PORT") || { echo "$out"; return 1; }
    echo "$out"
    echo "$out" | grep -qx 'OUTPUT0: 11 22 33 44' && echo "$out" | grep -qx 'OUTPUT1: -9 -18 -27 -36'
}
no_files() { left=$(find "$1" ! -type d) || return 1; same "$left" ""; }

# The version the header states; everything installed must agree with it.
part() { sed -n "s/^#define INFERWIRE_VERSION_$1 \([0-9][0-9]*\)\$/\1/p" "$SRC/include/inferwire.h"; }
MAJOR=$(part MAJOR)
V=$MAJOR.$(part MINOR).$(part PATCH)

# --- 1. default install (static + shared)
P1=$TMP/p1
L1=$P1/lib
check "make install PREFIX=$P1" run_make install PREFIX="$P1"
check "static library installed" test -f "$L1/libinferwire.a"
check "header installed" test -f "$P1/include/inferwire.h"
check "inferwire.pc installed" test -f "$L1/pkgconfig/inferwire.pc"
check "shared library installed" test -f "$L1/libinferwire.so.$V"
check "soname link" is_link_to "$L1/libinferwire.so.$MAJOR" "libinferwire.so.$V"
check "dev link" is_link_to "$L1/libinferwire.so" "libinferwire.so.$MAJOR"
check "soname is libinferwire.so.$MAJOR" prints "libinferwire.so.$MAJOR" dyn "$L1/libinferwire.so.$V" SONAME
check "shared library records protobuf-c" needs "$L1/libinferwire.so.$V" 'libprotobuf-c\.so.*'
check "shared library records zlib" needs "$L1/libinferwire.so.$V" 'libz\.so.*'
check "shared library records libssl" needs "$L1/libinferwire.so.$V" 'libssl\.so.*'
check "shared library records libcrypto" needs "$L1/libinferwire.so.$V" 'libcrypto\.so.*'
check "pkg-config Version" prints "$V" pc "$P1" --modversion
check "pkg-config prefix" prints "$P1" pc "$P1" --variable=prefix
check "pkg-config Cflags" prints "-I$P1/include" pc "$P1" --cflags
check "pkg-config Libs" prints "-L$L1 -linferwire" pc "$P1" --libs
check "pkg-config --static adds protobuf-c, zlib and openssl" \
    has_flags "-linferwire -lprotobuf-c -lz -lssl -lcrypto" pc "$P1" --static --libs-only-l

check "version_check builds with pkg-config --cflags --libs" \
    build "$TMP/vc_shared" "$HERE/version_check.c" "$P1" ""
check "version_check records the soname (not the dev link)" \
    needs "$TMP/vc_shared" "libinferwire\.so\.$MAJOR"
check "version macro == inferwire_version() (shared)" \
    prints "$V" env LD_LIBRARY_PATH="$L1" "$TMP/vc_shared"

# A program compiled with another version's header must notice at run time.
mkdir -p "$TMP/fake"
sed -e "s/^\(#define INFERWIRE_VERSION_MAJOR\) .*/\1 99/" \
    -e "s/^\(#define INFERWIRE_VERSION_STRING\) \"[0-9]*\./\1 \"99./" \
    "$SRC/include/inferwire.h" >"$TMP/fake/inferwire.h"
mismatch() {
    build "$TMP/vc_fake" "$HERE/version_check.c" "$P1" "" -I"$TMP/fake" || return 1
    LD_LIBRARY_PATH="$L1" "$TMP/vc_fake"
    rc=$?
    same "exit $rc" "exit 1"
}
check "header/library version mismatch is detected" mismatch

if [ -n "$PORT" ]; then
    check "infer_once builds against the installed shared library" \
        build "$TMP/io_shared" "$SRC/examples/infer_once.c" "$P1" ""
    check "infer_once (shared library) gets the add_sub answer" \
        answers env LD_LIBRARY_PATH="$L1" "$TMP/io_shared"
fi

# --- 2. static-only install: links only through Requires.private
P2=$TMP/p2
check "make install SHARED=0" run_make install PREFIX="$P2" SHARED=0
check "SHARED=0 installs no shared library" prints "" find "$P2" -name '*.so*'
check "version_check builds with pkg-config --static" \
    build "$TMP/vc_static" "$HERE/version_check.c" "$P2" --static
check "static build needs no libinferwire.so" needs_no "$TMP/vc_static" inferwire
check "version macro == inferwire_version() (static)" prints "$V" "$TMP/vc_static"
if [ -n "$PORT" ]; then
    check "infer_once builds with pkg-config --static" \
        build "$TMP/io_static" "$SRC/examples/infer_once.c" "$P2" --static
    check "infer_once (static library) gets the add_sub answer" answers "$TMP/io_static"
fi

# --- 3. staged install, custom LIBDIR: files under DESTDIR, paths in the .pc without it
STAGE=$TMP/stage
S=$STAGE/opt/inferwire
check "make install DESTDIR=... LIBDIR=.../lib64" \
    run_make install DESTDIR="$STAGE" PREFIX=/opt/inferwire LIBDIR=/opt/inferwire/lib64
check "DESTDIR: library under the stage" test -f "$S/lib64/libinferwire.a"
check "DESTDIR: header under the stage" test -f "$S/include/inferwire.h"
check "DESTDIR: .pc under the stage's LIBDIR" test -f "$S/lib64/pkgconfig/inferwire.pc"
check "DESTDIR: .pc names the real prefix" grep -qx 'prefix=/opt/inferwire' "$S/lib64/pkgconfig/inferwire.pc"
check "DESTDIR: .pc libdir relative to prefix" grep -qxF 'libdir=${prefix}/lib64' "$S/lib64/pkgconfig/inferwire.pc"
check "pkg-config --define-prefix relocates the staged tree" \
    prints "-L$S/lib64 -linferwire" \
    env PKG_CONFIG_PATH="$S/lib64/pkgconfig" "$PKG_CONFIG" --define-prefix --libs inferwire

# --- 4. uninstall leaves none of our files behind
check "make uninstall" run_make uninstall PREFIX="$P1"
check "uninstall removed every installed file" no_files "$P1"
check "make uninstall SHARED=0" run_make uninstall PREFIX="$P2" SHARED=0
check "uninstall removed every installed file (SHARED=0)" no_files "$P2"
check "make uninstall DESTDIR=..." \
    run_make uninstall DESTDIR="$STAGE" PREFIX=/opt/inferwire LIBDIR=/opt/inferwire/lib64
check "uninstall removed every installed file (DESTDIR)" no_files "$STAGE"

echo "$P passed, $F failed"
[ "$F" -eq 0 ]
