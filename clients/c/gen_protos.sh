#!/bin/sh
# Regenerates the protoc-c code in gen/ from the .proto files in Protos/.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PROTOS=${PROTOS:-"$HERE/../../Protos"}
rm -rf "$HERE/gen"
mkdir -p "$HERE/gen"
cd "$PROTOS"
protoc-c -I "$PROTOS" --c_out="$HERE/gen" inferwire/v1/*.proto
