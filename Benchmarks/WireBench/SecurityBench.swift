import ArgumentParser
import Foundation
import Histogram
import InferWireAuth
import InferWireBench
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireONNX
import InferWireProto
import InferWireServer
import NIOCore
import NIOPosix

/// Certificates, a token file and a JWKS file made for one benchmark run, in a temporary
/// directory, with the `openssl` command.
struct BenchCredentials {
    let directory: String
    let token = "bench-token-0123456789abcdef"
    var tokenFile: String { self.directory + "/tokens" }
    var caFile: String { self.directory + "/ca.pem" }
    var certificate: String { self.directory + "/server.pem" }
    var key: String { self.directory + "/server.key" }

    init() throws {
        self.directory =
            FileManager.default.temporaryDirectory.appendingPathComponent(
                "inferwire-bench-\(UUID().uuidString)"
            ).path
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        try Self.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            self.directory + "/ca.key", "-out", self.caFile, "-days", "2", "-subj", "/CN=InferWire Bench CA",
        ])
        try Self.openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.key, "-out",
            self.directory + "/server.csr", "-subj", "/CN=server",
        ])
        try Data("subjectAltName=IP:127.0.0.1,DNS:localhost\n".utf8).write(
            to: URL(fileURLWithPath: self.directory + "/server.ext"))
        try Self.openssl([
            "x509", "-req", "-in", self.directory + "/server.csr", "-CA", self.caFile, "-CAkey",
            self.directory + "/ca.key", "-CAcreateserial", "-days", "2", "-extfile", self.directory + "/server.ext",
            "-out", self.certificate,
        ])
        try Data("token \(TokenFile.digest(of: self.token)) bench infer\n".utf8).write(
            to: URL(fileURLWithPath: self.tokenFile))
    }

    func remove() { try? FileManager.default.removeItem(atPath: self.directory) }

    static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw BenchError("openssl \(arguments[0]) failed") }
    }
}

/// TLS and authentication against plaintext, same run: the Swift client's p50 at 1 in
/// flight, the load generator's req/s at 64 in flight, and what a connection costs to open.
struct SecurityBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "security",
        abstract: "TLS and authentication next to plaintext: request latency, throughput, connection setup.")

    @Option(help: "Model repository holding the identity model.")
    var repository = "examples/models"

    @Option(help: "Interleaved rounds; medians across rounds are reported.")
    var rounds = 5

    @Option(help: "Round trips per latency measurement.")
    var iterations = 5000

    @Option(help: "Seconds per throughput measurement.")
    var seconds = 2.0

    @Option(help: "Requests in flight for the throughput measurements.")
    var inFlight = 64

    @Option(help: "Connections opened per setup-cost measurement.")
    var connections = 200

    struct Variant {
        var name: String
        var port: Int
        var tls: Bool
        var token: Bool
    }

    func run() async throws {
        let credentials = try BenchCredentials()
        defer { credentials.remove() }
        let contents = try ModelRepository(
            directory: self.repository, loaders: ModelRepository.builtinLoaders + [OnnxModelLoader()]
        ).loadAll(logger: benchLogger)
        let dispatcher = RequestDispatcher(registry: ModelRegistry(contents: contents))
        let authenticator = try await Authenticator(configuration: .init(tokenFile: credentials.tokenFile))
        let tls = InferWireServer.Configuration.TLS(
            certificateChainPath: credentials.certificate, privateKeyPath: credentials.key)
        // Four servers, each on one I/O thread of its own, measured one at a time.
        try await withInProcessServer(dispatcher: dispatcher, ioThreads: 1) { plain in
            try await withInProcessServer(dispatcher: dispatcher, ioThreads: 1, authenticator: authenticator) {
                authenticated in
                try await withInProcessServer(dispatcher: dispatcher, ioThreads: 1, tls: tls) { encrypted in
                    try await withInProcessServer(
                        dispatcher: dispatcher, ioThreads: 1, tls: tls, authenticator: authenticator
                    ) { both in
                        try await self.measure(
                            [
                                Variant(name: "plaintext", port: plain, tls: false, token: false),
                                Variant(name: "plaintext + token", port: authenticated, tls: false, token: true),
                                Variant(name: "TLS", port: encrypted, tls: true, token: false),
                                Variant(name: "TLS + token", port: both, tls: true, token: true),
                            ], credentials: credentials)
                    }
                }
            }
        }
    }

    func measure(_ variants: [Variant], credentials: BenchCredentials) async throws {
        var request = Inferwire_V1_InferRequest()
        request.modelName = "identity"
        request.inputs = [Tensor(name: "INPUT0", values: (0..<16).map { Float($0) }, shape: [1, 16]).wire]
        func configuration(_ variant: Variant) -> InferWireClient.Configuration {
            .init(
                tls: variant.tls ? .init(caFile: credentials.caFile) : nil,
                bearerToken: variant.token ? credentials.token : nil)
        }
        var clients: [InferWireClient] = []
        var generators: [LoadGenerator] = []
        for variant in variants {
            clients.append(
                try await InferWireClient.connect(
                    host: "127.0.0.1", port: variant.port, configuration: configuration(variant)))
            generators.append(
                try await LoadGenerator.connect(
                    servers: [("127.0.0.1", variant.port)], connectionsPerServer: 1, request: request,
                    compression: false,
                    security: try ConnectionSecurity(
                        tls: configuration(variant).tls, bearerToken: configuration(variant).bearerToken)))
        }
        print("InferWire TLS and authentication: identity model, FP32[1,16]; one I/O thread per server")
        print(
            "\(self.rounds) interleaved rounds × \(self.iterations) round trips; throughput \(self.seconds) s at \(self.inFlight) in flight; \(self.connections) connections per setup measurement\n"
        )
        var p50 = Array(repeating: [Double](), count: variants.count)
        var p99 = Array(repeating: [Double](), count: variants.count)
        var rate = Array(repeating: [Double](), count: variants.count)
        var setup = Array(repeating: [Double](), count: variants.count)
        var p50Ratios = Array(repeating: [Double](), count: variants.count)
        var rateRatios = Array(repeating: [Double](), count: variants.count)
        for _ in 0..<self.rounds {
            for (index, client) in clients.enumerated() {
                let latency = try await WireBench.asyncPingPong(client, request, iterations: self.iterations)
                p50[index].append(latency.p50)
                p99[index].append(latency.p99)
            }
            for (index, generator) in generators.enumerated() {
                rate[index].append(
                    try await WireBench.generatorLevel(generator, concurrency: self.inFlight, seconds: self.seconds)
                        .throughput)
            }
            for (index, variant) in variants.enumerated() {
                setup[index].append(try await self.setupMicros(variant, configuration(variant)))
            }
            for index in variants.indices {
                p50Ratios[index].append(p50[index].last! / p50[0].last!)
                rateRatios[index].append(rate[index].last! / rate[0].last!)
            }
        }
        for client in clients { await client.close() }
        for generator in generators { await generator.close() }

        print(
            "server".padding(toLength: 22, withPad: " ", startingAt: 0)
                + "  p50 µs   p99 µs  req/s @\(self.inFlight)  connect µs   p50 ×    req/s ×")
        for (index, variant) in variants.enumerated() {
            print(
                variant.name.padding(toLength: 22, withPad: " ", startingAt: 0)
                    + String(
                        format: "%8.1f %8.1f %11.0f %11.0f %7.2f× %9.2f×", median(p50[index]), median(p99[index]),
                        median(rate[index]), median(setup[index]), median(p50Ratios[index]),
                        median(rateRatios[index])))
        }
        print("\n× columns: median of per-round ratios to plaintext; per-round p50 ratios:")
        for (index, variant) in variants.enumerated().dropFirst() {
            print(
                "  \(variant.name): "
                    + p50Ratios[index].map { String(format: "%.2f", $0) }.joined(separator: " ")
                    + "; req/s: " + rateRatios[index].map { String(format: "%.2f", $0) }.joined(separator: " "))
        }
    }

    /// Median microseconds to open a connection, finish its handshake (and AUTH) and close it.
    func setupMicros(_ variant: Variant, _ configuration: InferWireClient.Configuration) async throws -> Double {
        var samples: [Double] = []
        for _ in 0..<self.connections {
            let start = ContinuousClock.now
            let client = try await InferWireClient.connect(
                host: "127.0.0.1", port: variant.port, configuration: configuration)
            samples.append(Double((ContinuousClock.now - start).inNanoseconds) / 1000)
            await client.close()
        }
        return median(samples)
    }
}
