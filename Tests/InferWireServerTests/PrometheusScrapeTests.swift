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
                let prometheus = try PrometheusProcess(scraping: httpPort)
                defer { prometheus.stop() }
                let prometheusPort = prometheus.port

                let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
                for _ in 0..<20 {
                    _ = try await client.infer(
                        model: "mlp",
                        inputs: [Tensor(name: "X", values: [Float](repeating: 0.5, count: 32), shape: [1, 32])])
                }
                await client.close()

                let requests = try await self.waitForValue(
                    #"inferwire_requests_total{model="mlp",version="1",code="OK"}"#, port: prometheusPort
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

    @Test("every query of the Grafana dashboard in deploy/ returns data from a served repository")
    func dashboard() async throws {
        let binary = packageRoot + "/.build/debug/inferwire"
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/prometheus"),
            FileManager.default.isExecutableFile(atPath: binary)
        else {
            Issue.record("needs Debian's prometheus package and \(binary) (make test builds and installs both)")
            return
        }
        let dashboard = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: packageRoot + "/deploy/grafana/inferwire-dashboard.json")))
        var queries: [(panel: String, expr: String)] = []
        for panel in (dashboard as? [String: Any])?["panels"] as? [[String: Any]] ?? [] {
            for target in panel["targets"] as? [[String: Any]] ?? [] {
                if let expr = target["expr"] as? String { queries.append((panel["title"] as? String ?? "?", expr)) }
            }
        }
        #expect(queries.count >= 20)

        // A repository of our own: the server writes its rollout state there.
        let repository = FileManager.default.temporaryDirectory.appendingPathComponent(
            "inferwire-dashboard-\(UUID().uuidString)"
        ).path
        try FileManager.default.copyItem(atPath: packageRoot + "/examples/models", toPath: repository)
        defer { try? FileManager.default.removeItem(atPath: repository) }
        let server = try LoggedProcess(
            binary,
            [
                "serve", "--repository", repository, "--port", "0", "--http-port", "0", "--prediction-log",
                repository + "/.predictions", "--prediction-log-rate", "1",
            ])
        defer { server.stop() }
        let port = try #require(server.lines.number(after: "listening on 127.0.0.1:"))
        let httpPort = try #require(server.lines.number(after: "HTTP endpoints (metrics, health) on 127.0.0.1:"))
        let prometheus = try PrometheusProcess(scraping: httpPort)
        defer { prometheus.stop() }

        // Rates need a sample from before the traffic.
        _ = try await self.waitForValue(#"count(inferwire_requests_total)"#, port: prometheus.port) { $0 > 0 }

        // Traffic that gives every panel something: answers and errors, a canary promoted and
        // rolled back, a shadow (left running: its series end with it).
        let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
        let mlp = Tensor(name: "X", values: [Float](repeating: 0.5, count: 32), shape: [1, 32])
        let fraud = Tensor(name: "X", values: (0..<8).map { Float($0) / 8 }, shape: [1, 8])
        for _ in 0..<20 { _ = try await client.infer(model: "mlp", inputs: [mlp]) }
        await #expect(throws: InferWireError.self) {
            try await client.infer(model: "mlp", inputs: [Tensor(name: "X", values: [Float(1)], shape: [1, 1])])
        }
        await #expect(throws: InferWireError.self) { try await client.infer(model: "no-such-model", inputs: [mlp]) }
        _ = try await client.setTraffic("fraud", canary: 1, percent: 50)
        for _ in 0..<10 { _ = try await client.infer(model: "fraud", inputs: [fraud]) }
        _ = try await client.promote("fraud")
        _ = try await client.rollback("fraud")
        _ = try await client.setShadow("fraud", version: 1, percent: 100)
        _ = try await self.waitForValue(#"count(inferwire_shadow_comparisons_total)"#, port: prometheus.port) { $0 > 0 }
        for _ in 0..<20 { _ = try await client.infer(model: "fraud", inputs: [fraud]) }
        await client.close()

        // The server's counters as Prometheus sees them once they are final, then every query.
        _ = try await self.waitForValue(
            #"sum(inferwire_rollout_events_total{event="rollback"})"#, port: prometheus.port
        ) { $0 >= 1 }
        let deadline = ContinuousClock.now + .seconds(30)
        var empty = queries
        while !empty.isEmpty && ContinuousClock.now < deadline {
            var stillEmpty: [(panel: String, expr: String)] = []
            for query in empty {
                let expr = query.expr.replacingOccurrences(of: "$__rate_interval", with: "5m")
                    .replacingOccurrences(of: "$__range", with: "5m").replacingOccurrences(of: "$model", with: ".*")
                    .replacingOccurrences(of: "$job", with: ".*")
                let values = (try? await self.values(expr, port: prometheus.port)) ?? []
                if !values.contains(where: { !$0.isNaN }) { stillEmpty.append(query) }
            }
            empty = stillEmpty
            if !empty.isEmpty { try await Task.sleep(for: .milliseconds(500)) }
        }
        for query in empty { Issue.record("panel '\(query.panel)' has no data: \(query.expr)") }
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

    /// Every value an instant query returns (one per series).
    func values(_ query: String, port: Int) async throws -> [Double] {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "+&=")
        let encoded = query.addingPercentEncoding(withAllowedCharacters: allowed) ?? query
        let answer = try await get("/api/v1/query?query=\(encoded)", port: port)
        guard answer.status == 200,
            let json = try JSONSerialization.jsonObject(with: Data(Self.body(answer).utf8)) as? [String: Any],
            let data = json["data"] as? [String: Any], let results = data["result"] as? [[String: Any]]
        else { return [] }
        return results.compactMap { ($0["value"] as? [Any])?.last as? String }.compactMap { Double($0) }
    }

    /// The body of a response, its chunks joined when Prometheus sent it chunked (large answers).
    static func body(_ answer: (status: Int, body: String, raw: String)) -> String {
        let head = answer.raw.components(separatedBy: "\r\n\r\n").first ?? ""
        guard head.lowercased().contains("transfer-encoding: chunked") else { return answer.body }
        var rest = Substring(answer.body)
        var joined = ""
        while let lineEnd = rest.range(of: "\r\n"), let size = Int(rest[..<lineEnd.lowerBound], radix: 16), size > 0 {
            let start = lineEnd.upperBound
            let bytes = rest[start...].utf8.prefix(size)
            joined += String(decoding: bytes, as: UTF8.self)
            rest = rest[rest.utf8.index(start, offsetBy: size)...].dropFirst(2)
        }
        return joined
    }

    /// The query's first value.
    func query(_ query: String, port: Int) async throws -> Double? {
        try await self.values(query, port: port).first
    }
}

/// Debian's Prometheus on a free loopback port, scraping one target every second, with its
/// data in a temporary directory removed by ``stop()``.
struct PrometheusProcess {
    let port: Int
    let directory: String
    let process: Process

    init(scraping target: Int) throws {
        self.directory =
            FileManager.default.temporaryDirectory.appendingPathComponent(
                "inferwire-prometheus-\(UUID().uuidString)"
            ).path
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        let configuration = """
            global: {scrape_interval: 1s, evaluation_interval: 1s}
            scrape_configs:
              - job_name: inferwire
                static_configs: [{targets: ['127.0.0.1:\(target)']}]
            """
        try Data(configuration.utf8).write(to: URL(fileURLWithPath: self.directory + "/prometheus.yml"))
        self.port = try freeLoopbackPort()
        self.process = Process()
        self.process.executableURL = URL(fileURLWithPath: "/usr/bin/prometheus")
        self.process.arguments = [
            "--config.file=\(self.directory)/prometheus.yml", "--storage.tsdb.path=\(self.directory)/data",
            "--web.listen-address=127.0.0.1:\(self.port)",
        ]
        self.process.standardError = FileHandle.nullDevice
        self.process.standardOutput = FileHandle.nullDevice
        try self.process.run()
    }

    func stop() {
        self.process.terminate()
        self.process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}
