# InferWire: the two front-door commands are `make run` and `make test`.
REPOSITORY ?= examples/models
HOST ?= 127.0.0.1
PORT ?= 8500

.PHONY: run test build release deps protos format lint fuzz bench bench-batching bench-rollout bench-metrics bench-fleet bench-onnx onnx-node-tests compare-rest fixtures clean

## Install what is missing, build release, serve the bundled example models.
run: deps release
	.build/release/inferwire serve --repository $(REPOSITORY) --host $(HOST) --port $(PORT)

## Install what is missing and run every test suite; ends with "N passed, N failed".
test:
	scripts/test

deps:
	scripts/install-deps

build: deps
	swift build

release: deps
	swift build -c release --product inferwire

## Format every Swift source with swift-format (.swift-format); generated code is left alone.
format:
	scripts/format

## Fail if any Swift source is unformatted or breaks a lint rule (make test runs this too).
lint:
	scripts/format --lint

## Build the libFuzzer harnesses (Fuzz/) and run each for FUZZ_SECONDS (default 30) from its seeds.
fuzz: deps
	scripts/fuzz

## Regenerate Sources/InferWireProto from Protos/.
protos: deps
	scripts/gen-protos

## InferWire against a FastAPI + uvicorn + onnxruntime REST service on the mlp example.
compare-rest: deps
	scripts/compare-rest

## Round-trip latency and throughput against a raw TCP echo floor (release build).
bench: deps
	swift build -c release --product inferwire-wirebench
	.build/release/inferwire-wirebench wire --repository $(REPOSITORY)

## Dynamic batching on vs off on the mlp example (release build).
bench-batching: deps
	swift build -c release --product inferwire-wirebench
	.build/release/inferwire-wirebench batching --repository $(REPOSITORY)

## Latency during version swaps, memory across load/unload, time to ready (release build).
bench-rollout: deps
	swift build -c release --product inferwire-wirebench
	.build/release/inferwire-wirebench rollout --repository $(REPOSITORY)

## Request metrics on vs off, interleaved: p50 at 1 in flight, req/s at 64 (release build).
bench-metrics: deps
	swift build -c release --product inferwire-wirebench
	.build/release/inferwire-wirebench metrics --repository $(REPOSITORY)

## Time until every replica routes by a change made through one (3 replicas, etcd on loopback; release build).
bench-fleet: deps
	swift build -c release --product inferwire-wirebench
	.build/release/inferwire-wirebench fleet

## InferWire's ONNX runtime next to onnxruntime (Python venv), per-call ratios.
bench-onnx:
	scripts/bench-onnx

## ONNX's own node test cases through InferWire's runtime (onnx from PyPI in .venv-onnx).
onnx-node-tests:
	scripts/onnx-node-tests --quiet

## Rebuild the ONNX fixtures and example models with scikit-learn/skl2onnx/onnxruntime.
fixtures:
	scripts/make-fixtures

clean:
	rm -rf .build
