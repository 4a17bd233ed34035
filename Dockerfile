# syntax=docker/dockerfile:1
# InferWire's server image: `inferwire` built in release mode, run as a non-root user on a
# slim Debian 12. deploy/kubernetes/README.md says how it is used (and that this file has
# not been built: no Docker engine runs where it was written).
#   docker build -t inferwire .

FROM swift:6.3-bookworm AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends zlib1g-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a change to the sources reuses this layer.
COPY Package.swift ./
RUN swift package resolve
COPY . .
# The Swift runtime and Foundation linked statically: the binary then needs only glibc,
# libstdc++, libgcc and zlib. Debug info is stripped (176 MB to 112 MB); the symbols stay,
# for backtraces.
RUN swift build -c release --static-swift-stdlib --product inferwire \
    && install -D -m 0755 "$(swift build -c release --static-swift-stdlib --show-bin-path)/inferwire" /out/inferwire \
    && strip --strip-debug /out/inferwire

FROM debian:bookworm-slim
# zlib (compressed payloads) and libstdc++ come with the base image. OpenBLAS is not linked
# but loaded at run time by name (libopenblas.so.0, Sources/InferWireONNX/BLAS.swift);
# without it ONNX models cannot load.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libopenblas0-pthread \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/inferwire /usr/local/bin/inferwire
# A numeric user, so that Kubernetes' runAsNonRoot can verify it without a passwd entry.
USER 65532:65532
# Inference (binary protocol), management (when --management-port 8501), HTTP (health, metrics).
EXPOSE 8500 8501 8502
ENTRYPOINT ["/usr/local/bin/inferwire"]
# Without arguments: the models mounted at /models; management stays on the container's
# loopback (serving it beyond without credentials is refused). The Kubernetes manifests
# pass their own arguments.
CMD ["serve", "--repository", "/models", "--host", "0.0.0.0", "--http-host", "0.0.0.0", "--management-port", "8501"]
