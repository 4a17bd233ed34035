// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "InferWire",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "inferwire", targets: ["inferwire"]),
        .executable(name: "inferwire-wirebench", targets: ["inferwire-wirebench"]),
        .library(name: "InferWireClient", targets: ["InferWireClient"]),
        .library(name: "InferWireServer", targets: ["InferWireServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // etcd's v3 API through its JSON gateway: reads, compare-and-swap transactions, watches.
        .target(
            name: "InferWireEtcd",
            dependencies: [
                "InferWireEngine",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // zlib, for compressed frame payloads.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // Generated protobuf code only (scripts/gen-protos); never edited by hand.
        .target(
            name: "InferWireProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: swiftSettings
        ),

        // Framing: frame header, decoder, encoder, compression, the client's handshake. No sockets.
        .target(
            name: "InferWireWire",
            dependencies: [
                "CZlib", "InferWireProto",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // The types every other module shares: tensors, data types, status codes and errors,
        // model signatures, the model and loader protocols. No threads, no sockets.
        .target(
            name: "InferWireCore",
            dependencies: ["InferWireProto"],
            swiftSettings: swiftSettings
        ),

        // The serving engine: model repository and registry, per-version schedulers and the
        // batcher, request dispatch, the model manager (rollouts, shadow, guard), request spans
        // (swift-distributed-tracing). No sockets. Only the server, the CLI and their tests link it.
        .target(
            name: "InferWireEngine",
            dependencies: [
                "InferWireCore", "InferWireProto",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),

        // The embedded ONNX runtime: parses .onnx files, plans graphs, runs operators.
        .target(
            name: "InferWireONNX",
            dependencies: ["InferWireCore", "InferWireProto"],
            swiftSettings: swiftSettings
        ),

        // Who a connection is: bearer tokens from a token file (stored hashed), JWTs verified
        // with jwt-kit against a JWKS file, TLS client certificates by common name.
        .target(
            name: "InferWireAuth",
            dependencies: [
                "InferWireCore",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),

        // The TCP server: NIO transport, TLS, per-connection protocol state, graceful shutdown;
        // the HTTP listener for metrics and health probes.
        .target(
            name: "InferWireServer",
            dependencies: [
                "InferWireAuth", "InferWireCore", "InferWireEngine", "InferWireWire", "InferWireProto",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // The async Swift client library.
        .target(
            name: "InferWireClient",
            dependencies: [
                "InferWireWire", "InferWireProto", "InferWireCore",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // The load generator behind `inferwire bench`: closed-loop levels, HdrHistogram
        // percentiles, window stability, JSON and CSV reports.
        .target(
            name: "InferWireBench",
            dependencies: [
                "InferWireClient", "InferWireCore", "InferWireProto", "InferWireWire",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),

        // The `inferwire` command: serve, infer, models, bench.
        .executableTarget(
            name: "inferwire",
            dependencies: [
                "InferWireAuth", "InferWireServer", "InferWireClient", "InferWireCore", "InferWireEngine",
                "InferWireWire", "InferWireEtcd",
                "InferWireProto",
                "InferWireONNX", "InferWireBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // Round-trip latency and throughput against a raw TCP echo floor: `make bench`.
        .executableTarget(
            name: "inferwire-wirebench",
            dependencies: [
                "InferWireAuth", "InferWireServer", "InferWireClient", "InferWireCore", "InferWireEngine",
                "InferWireWire", "InferWireEtcd",
                "InferWireProto",
                "InferWireONNX", "InferWireBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Benchmarks/WireBench",
            swiftSettings: swiftSettings
        ),

        // The ONNX runtime's time per call, for scripts/bench-onnx.
        .executableTarget(
            name: "inferwire-onnxbench",
            dependencies: [
                "InferWireONNX", "InferWireCore", "InferWireProto",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/OnnxBench",
            swiftSettings: swiftSettings
        ),

        // ONNX's node test cases through the runtime: `scripts/onnx-node-tests`.
        .executableTarget(
            name: "inferwire-onnx-conformance",
            dependencies: [
                "InferWireONNX", "InferWireCore", "InferWireProto",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/OnnxConformance",
            swiftSettings: swiftSettings
        ),

        .testTarget(
            name: "InferWireEtcdTests",
            dependencies: [
                "InferWireEtcd", "InferWireEngine", "InferWireServer", "InferWireClient", "InferWireCore",
                "InferWireProto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "InferWireWireTests",
            dependencies: [
                "InferWireWire", "InferWireProto",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "InferWireCoreTests",
            dependencies: ["InferWireCore", "InferWireProto"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "InferWireEngineTests",
            dependencies: [
                "InferWireCore", "InferWireEngine", "InferWireProto", .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "InferWireBenchTests",
            dependencies: [
                "InferWireBench", "InferWireCore", "InferWireProto",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "InferWireONNXTests",
            dependencies: [
                "InferWireONNX", "InferWireCore", "InferWireEngine", "InferWireProto",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "InferWireServerTests",
            dependencies: [
                "InferWireAuth", "InferWireServer", "InferWireClient", "InferWireCore", "InferWireEngine",
                "InferWireWire", "InferWireEtcd",
                "InferWireProto",
                "InferWireONNX", "InferWireBench",
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)

// libFuzzer harnesses, built only by `make fuzz` (scripts/fuzz sets INFERWIRE_FUZZ and the
// sanitizer flags): each executable holds one LLVMFuzzerTestOneInput.
if Context.environment["INFERWIRE_FUZZ"] != nil {
    let harnesses: [(String, [Target.Dependency])] = [
        ("FuzzFrameDecoder", ["InferWireWire", .product(name: "NIOCore", package: "swift-nio")]),
        ("FuzzRequest", ["InferWireEngine", "InferWireCore", "InferWireProto"]),
        ("FuzzOnnxLoader", ["InferWireONNX"]),
        ("FuzzModelConfig", ["InferWireCore", "InferWireProto"]),
    ]
    package.targets.append(.target(name: "FuzzSupport", path: "Fuzz/FuzzSupport", swiftSettings: swiftSettings))
    for (name, dependencies) in harnesses {
        package.targets.append(
            .executableTarget(
                name: name, dependencies: ["FuzzSupport"] + dependencies, path: "Fuzz/\(name)",
                swiftSettings: swiftSettings))
    }
}
