"""Generated protobuf modules (see gen_protos.sh). Do not edit."""
