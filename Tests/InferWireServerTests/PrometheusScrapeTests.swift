import Foundation
import InferWireCore
import InferWireEngine
import InferWireServer
import Testing

@testable import InferWireClient

#if canImport(Glibc)
    import Glibc
#endif

/// A free loopback port: bound to 0, read back, released for the process about to use it.
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    guard bound else { throw POSIXError(.EADDRINUSE) }
    return Int(UInt16(bigEndian: address.sin_port))
}

@Suite("A real Prometheus scrapes the server", .timeLimit(.minutes(2)))
struct PrometheusScrapeTests {
    @Test("after traffic, Prometheus has the request counter and a compute-time quantile")
    func scrape() async throws {
        let binary = "/usr/bin/prometheus"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            Issue.record("needs Debian's prometheus package (scripts/install-deps installs it)")
            return
        }
        let dispatcher = RequestDispatcher(registry: try makeRegistry())
        let box = ServerBox()
        try await withServer(dispatcher: dispatcher, onServer: box.store) { port in
            let exporter = MetricsExporter(
                dispatcher: dispatcher, manager: nil, listeners: [("inference", try #require(box.server))])
            try await withHTTPEndpoints(
                sources: .init(readiness: { Readiness(problems: []) }, metrics: { exporter.exposition() })
            ) { httpPort in
                let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                    "inferwire-prometheus-\(UUID().uuidString)"
                ).path
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let configuration = """
                    global: {scrape_interval: 1s, evaluation_interval: 1s}
                    scrape_configs:
                      - job_name: inferwire
                        static_configs: [{targets: ['127.0.0.1:\(httpPort)']}]
                    """
                try Data(configuration.utf8).write(to: URL(fileURLWithPath: directory + "/prometheus.yml"))
                let prometheusPort = try freeLoopbackPort()
                let process = Process()
                process.executableURL = URL(fileURLWithPath: binary)
                process.arguments = [
                    "--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data",
                    "--web.listen-address=127.0.0.1:\(prometheusPort)",
                ]
                process.standardError = FileHandle.nullDevice
                process.standardOutput = FileHandle.nullDevice
                try process.run()
                defer {
                    process.terminate()
                    process.waitUntilExit()
                }

                let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
                for _ in 0..<20 {
                    _ = try await client.infer(
                        model: "mlp",
                        inputs: [Tensor(name: "X", values: [Float](repeating: 0.5, count: 32), shape: [1, 32])])
                }
                await client.close()

                let requests = try await self.waitForValue(
                    #"inferwire_requests_total{model="mlp",version="1"}"#, port: prometheusPort
                ) { $0 >= 20 }
                #expect(requests == 20)
                let quantile = try await self.waitForValue(
                    #"histogram_quantile(0.99, sum by (le) (inferwire_compute_duration_seconds_bucket{model="mlp"}))"#,
                    port: prometheusPort
                ) { $0 > 0 }
                #expect(quantile > 0 && quantile < 10)
            }
        }
    }

    /// Queries Prometheus until the query's first value satisfies `done` (60 s at most).
    func waitForValue(_ query: String, port: Int, until done: (Double) -> Bool) async throws -> Double {
        let deadline = ContinuousClock.now + .seconds(60)
        var last: Double?
        while ContinuousClock.now < deadline {
            if let value = try? await self.query(query, port: port) {
                last = value
                if done(value) { return value }
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        Issue.record("Prometheus never answered \(query) as expected (last: \(String(describing: last)))")
        return last ?? -1
    }

    func query(_ query: String, port: Int) async throws -> Double? {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "+&=")
        let encoded = query.addingPercentEncoding(withAllowedCharacters: allowed) ?? query
        let answer = try await get("/api/v1/query?query=\(encoded)", port: port)
        guard answer.status == 200,
            let json = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any],
            let data = json["data"] as? [String: Any], let results = data["result"] as? [[String: Any]],
            let value = results.first?["value"] as? [Any], value.count == 2, let text = value[1] as? String
        else { return nil }
        return Double(text)
    }
}
