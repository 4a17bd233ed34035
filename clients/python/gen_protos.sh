#!/usr/bin/env bash
# Regenerate the committed protobuf modules in src/inferwire/_proto/ from
# Protos/inferwire/v1/*.proto.
#
# Uses the protoc bundled with grpcio-tools (PyPI); Debian's protoc is too old
# for current protobuf runtimes. If the grpcio-tools version changes, check the
# runtime version the generated code requires (ValidateProtobufRuntimeVersion in
# each *_pb2.py) and update the protobuf pin in pyproject.toml to match.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
protos="$(cd "$here/../../Protos" && pwd)"
out="$here/src/inferwire/_proto"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python="${PYTHON:-python3}"
if ! "$python" -c 'import grpc_tools' 2>/dev/null; then
    "$python" -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" install -q "grpcio-tools==${GRPCIO_TOOLS_VERSION:-1.76.0}"
    python="$tmp/venv/bin/python"
fi

"$python" -m grpc_tools.protoc -I "$protos" --python_out="$tmp" --pyi_out="$tmp" \
    "$protos"/inferwire/v1/{status,tensor,frames,inference,management,model_config}.proto

# protoc emits absolute imports ("from inferwire.v1 import tensor_pb2"); make them
# relative so the modules live inside this package.
mkdir -p "$out"
for f in "$tmp"/inferwire/v1/*_pb2.py "$tmp"/inferwire/v1/*_pb2.pyi; do
    sed -E 's/^from inferwire\.v1 import ([a-z_]+_pb2)/from . import \1/' "$f" > "$out/$(basename "$f")"
done
[ -f "$out/__init__.py" ] || echo '"""Generated protobuf modules (see gen_protos.sh). Do not edit."""' > "$out/__init__.py"
"$python" -c 'import grpc_tools, importlib.metadata as m; print("generated with grpcio-tools", m.version("grpcio-tools"))'
