import CoreMetrics
import Foundation
import InferWireCore
import InferWireEngine
import InferWireProto
import InferWireServer
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import Testing

@testable import InferWireClient

/// Runs the HTTP listener on a free loopback port for the duration of `body`.
func withHTTPEndpoints<T: Sendable>(
    sources: HTTPEndpointServer.Sources, readTimeout: Duration = .seconds(30),
    metricsFactory: (any MetricsFactory)? = nil,
    _ body: @Sendable (_ port: Int) async throws -> T
) async throws -> T {
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let server = HTTPEndpointServer(
        configuration: .init(host: "127.0.0.1", port: 0, readTimeout: readTimeout), sources: sources, logger: quiet,
        onListening: { continuation.yield($0.port!) }, metricsFactory: metricsFactory)
    let group = ServiceGroup(configuration: .init(services: [server], logger: quiet))
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CancellationError() }
        let result: Result<T, any Error>
        do { result = .success(try await body(port)) } catch { result = .failure(error) }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
        return try result.get()
    }
}

/// Sends `request` as it is and returns the whole response (the server closes after it).
func httpExchange(port: Int, _ request: String) async throws -> (status: Int, body: String, raw: String) {
    try await withRawConnection(port: port) { connection in
        try await connection.send(Array(request.utf8))
        let raw = String(decoding: try await connection.readToEnd(), as: UTF8.self)
        let status = raw.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
        let body = raw.range(of: "\r\n\r\n").map { String(raw[$0.upperBound...]) } ?? ""
        return (status, body, raw)
    }
}

func get(_ path: String, port: Int, method: String = "GET") async throws -> (status: Int, body: String, raw: String) {
    try await httpExchange(port: port, "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

@Suite("HTTP metrics and health", .timeLimit(.minutes(1)))
struct HTTPEndpointTests {
    @Test("health answers live and ready; readiness names what is not ready")
    func health() async throws {
        let problems = ProblemsBox()
        let sources = HTTPEndpointServer.Sources(
            readiness: { Readiness(problems: problems.value) }, metrics: { "" })
        try await withHTTPEndpoints(sources: sources) { port in
            for path in ["/health/live", "/v2/health/live", "/health/ready", "/v2/health/ready"] {
                let answer = try await get(path, port: port)
                #expect(answer.status == 200, "\(path): \(answer.raw)")
            }
            problems.value = ["model 'fraud' version 2 is loading"]
            let answer = try await get("/health/ready", port: port)
            #expect(answer.status == 503)
            #expect(answer.body.contains("model 'fraud' version 2 is loading"))
            #expect(try await get("/v2/health/ready", port: port).status == 503)
            #expect(try await get("/health/live", port: port).status == 200)
        }
    }

    @Test(
        "metrics count requests per model, version and status code, with duration and batch histograms, connections, bytes and the process"
    )
    func metrics() async throws {
        let dispatcher = RequestDispatcher(registry: try makeRegistry())
        let box = ServerBox()
        try await withServer(dispatcher: dispatcher, onServer: box.store) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            for _ in 0..<3 {
                _ = try await client.infer(
                    model: "mlp",
                    inputs: [
                        Tensor(name: "X", values: [Float](repeating: 0.5, count: 32), shape: [1, 32])
                    ])
            }
            // A shape the model does not take, and a model the server does not have.
            await #expect(throws: InferWireError.self) {
                try await client.infer(model: "mlp", inputs: [Tensor(name: "X", values: [Float(1)], shape: [1, 1])])
            }
            await #expect(throws: InferWireError.self) {
                try await client.infer(
                    model: "no-such-model", inputs: [Tensor(name: "X", values: [Float(1)], shape: [1])])
            }
            await client.close()
            let exporter = MetricsExporter(
                dispatcher: dispatcher, manager: nil, listeners: [("inference", try #require(box.server))])
            let text = try await withHTTPEndpoints(
                sources: .init(readiness: { Readiness(problems: []) }, metrics: { exporter.exposition() })
            ) { httpPort in
                let answer = try await get("/metrics", port: httpPort)
                #expect(answer.status == 200)
                #expect(answer.raw.contains("Content-Type: text/plain; version=0.0.4"))
                return answer.body
            }
            #expect(text.contains(#"inferwire_requests_total{model="mlp",version="1",code="OK"} 3"#), "\(text)")
            #expect(text.contains(#"inferwire_requests_total{model="mlp",version="1",code="INVALID_ARGUMENT"} 1"#))
            #expect(text.contains(#"inferwire_requests_total{model="add_sub",version="1",code="OK"} 0"#))
            // The unknown model's name is the client's string: it is no label value.
            #expect(text.contains(#"inferwire_unrouted_requests_total{code="NOT_FOUND"} 1"#))
            #expect(!text.contains("no-such-model"))
            #expect(text.contains(#"inferwire_executions_total{model="mlp",version="1"} 3"#))
            #expect(text.contains(#"inferwire_request_duration_seconds_count{model="mlp",version="1"} 4"#))
            #expect(
                text.contains(#"inferwire_request_duration_seconds_bucket{model="mlp",version="1",le="16.777216"}"#))
            #expect(text.contains(#"inferwire_queue_depth{model="mlp",version="1"} 0"#))
            #expect(text.contains(#"inferwire_requests_in_flight{listener="inference"} 0"#))
            for name in ["inferwire_received_bytes_total", "inferwire_sent_bytes_total"] {
                let value = text.split(separator: "\n").first { $0.hasPrefix(name + #"{listener="inference"}"#) }
                    .flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }
                #expect((value ?? 0) > 32 * 4 * 3, "\(name)")
            }
            #expect(text.contains("# TYPE inferwire_compute_duration_seconds histogram"))
            #expect(text.contains(#"inferwire_compute_duration_seconds_count{model="mlp",version="1"} 3"#))
            #expect(text.contains(#"inferwire_batch_size_bucket{model="mlp",version="1",le="1"} 3"#))
            #expect(text.contains(#"inferwire_connections_accepted_total{listener="inference"} 1"#))
            #expect(text.contains("process_resident_memory_bytes "))
            #expect(text.contains("process_open_fds "))
            #expect(text.contains("process_start_time_seconds "))
        }
    }

    @Test("HTTP requests and rejected connections are counted through swift-metrics and exported with the rest")
    func eventsExported() async throws {
        let events = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: events)
        let dispatcher = RequestDispatcher(registry: try makeRegistry())
        let box = ServerBox()
        try await withServer(dispatcher: dispatcher, metricsFactory: factory, onServer: box.store) { port in
            // HTTP on the binary port: answered 400, the connection closed, and counted.
            let refused = try await httpExchange(port: port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(refused.status == 400)
            let exporter = MetricsExporter(
                dispatcher: dispatcher, manager: nil, listeners: [("inference", try #require(box.server))],
                events: events)
            try await withHTTPEndpoints(
                sources: .init(readiness: { Readiness(problems: []) }, metrics: { exporter.exposition() }),
                metricsFactory: factory
            ) { httpPort in
                #expect(try await get("/nope?x=1", port: httpPort).status == 404)
                #expect(try await get("/health/live", port: httpPort).status == 200)
                let text = try await get("/metrics", port: httpPort).body
                #expect(
                    text.contains(#"inferwire_connections_rejected_total{listener="inference",reason="http"} 1"#),
                    "\(text)")
                #expect(text.contains(#"inferwire_http_requests_total{path="other",code="404"} 1"#))
                #expect(text.contains(#"inferwire_http_requests_total{path="/health/live",code="200"} 1"#))
                // The client's path is no label value.
                #expect(!text.contains("nope"))
            }
        }
    }

    @Test("with metrics off, /metrics answers 404 and requests are not timed end to end")
    func metricsOff() async throws {
        let dispatcher = RequestDispatcher(registry: try makeRegistry(), timesRequests: false)
        try await withServer(dispatcher: dispatcher) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            _ = try await client.infer(
                model: "mlp", inputs: [Tensor(name: "X", values: [Float](repeating: 0.5, count: 32), shape: [1, 32])])
            await client.close()
            let statistics = try dispatcher.statisticsForBench(model: "mlp")
            #expect(statistics.statusCounts == [0: 1])
            #expect(statistics.requestTimeHistogram.isEmpty)
            #expect(statistics.requestTimeUs == 0)
        }
        let sources = HTTPEndpointServer.Sources(readiness: { Readiness(problems: []) }, metrics: nil)
        try await withHTTPEndpoints(sources: sources) { port in
            let answer = try await get("/metrics", port: port)
            #expect(answer.status == 404)
            #expect(answer.body.contains("metrics are switched off"))
            #expect(try await get("/health/ready", port: port).status == 200)
        }
    }

    @Test("bad requests get their HTTP status, a slow client is closed, and the listener keeps serving")
    func badInput() async throws {
        let sources = HTTPEndpointServer.Sources(readiness: { Readiness(problems: []) }, metrics: { "m 1\n" })
        try await withHTTPEndpoints(sources: sources, readTimeout: .milliseconds(300)) { port in
            #expect(try await get("/nope", port: port).status == 404)
            let post = try await get("/metrics", port: port, method: "POST")
            #expect(post.status == 405)
            #expect(post.raw.contains("Allow: GET, HEAD"))
            let head = try await get("/metrics", port: port, method: "HEAD")
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
            let garbage = try await httpExchange(port: port, "NOT HTTP AT ALL\r\n\r\n")
            #expect(garbage.status == 400, "\(garbage.raw)")
            let big = String(repeating: "x", count: 64 * 1024)
            let oversized = try await httpExchange(
                port: port,
                "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: \(big.utf8.count)\r\n\r\n\(big)")
            #expect(oversized.status == 413)
            // A client that opens a connection and sends half a request is closed.
            let stalled = try await httpExchange(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\n")
            #expect(stalled.raw.isEmpty)
            #expect(try await get("/metrics", port: port).body == "m 1\n")
        }
    }
}

final class ProblemsBox: @unchecked Sendable {
    private let lock = NSLock()
    private var problems: [String] = []
    var value: [String] {
        get { self.lock.withLock { self.problems } }
        set { self.lock.withLock { self.problems = newValue } }
    }
}
