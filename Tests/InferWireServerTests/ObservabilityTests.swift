import Foundation
import InMemoryTracing
import InferWireCore
import InferWireEngine
import InferWireProto
import Logging
import Synchronization
import Testing
import Tracing

@testable import InferWireClient
@testable import InferWireServer

/// The in-memory tracer with W3C propagation: a `traceparent` in the carrier becomes the
/// remote parent, as swift-otel's propagator makes it.
struct W3CInMemoryTracer: Tracer {
    let base = InMemoryTracer()

    func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind,
        at instant: @autoclosure () -> Instant, function: String, file fileID: String, line: UInt
    ) -> InMemorySpan {
        self.base.startSpan(
            operationName, context: context(), ofKind: kind, at: instant(), function: function, file: fileID,
            line: line)
    }

    func extract<Carrier, Extract: Extractor>(
        _ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract
    ) where Extract.Carrier == Carrier {
        guard let header = extractor.extract(key: "traceparent", from: carrier), let parent = TraceParent(header)
        else { return }
        context.inMemorySpanContext = InMemorySpanContext(
            traceID: parent.traceID, spanID: parent.parentSpanID, parentSpanID: nil)
    }

    func inject<Carrier, Inject: Injector>(
        _ context: ServiceContext, into carrier: inout Carrier, using injector: Inject
    ) where Inject.Carrier == Carrier {}

    func forceFlush() {}

    func activeSpan(identifiedBy context: ServiceContext) -> InMemorySpan? { nil }
}

@Suite("Trace context, access log, JSON logs, readiness reasons", .timeLimit(.minutes(1)))
struct ObservabilityTests {
    static let parent = TraceParent(
        traceID: "4bf92f3577b34da6a3ce929d0e0e4736", parentSpanID: "00f067aa0ba902b7", flags: 1)

    @Test("a traceparent sent by the client parents the server's infer span, with queue and compute children")
    func tracedRequest() async throws {
        let tracer = W3CInMemoryTracer()
        let dispatcher = RequestDispatcher(registry: try makeRegistry(), tracing: RequestTracing(tracer: tracer))
        try await withServer(dispatcher: dispatcher) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            _ = try await client.infer(
                model: "mlp", inputs: [Tensor(name: "X", values: [Float](repeating: 0.5, count: 32), shape: [1, 32])],
                traceParent: Self.parent, traceState: "vendor=1")
            await #expect(throws: InferWireError.self) {
                try await client.infer(
                    model: "mlp", inputs: [Tensor(name: "X", values: [Float(1)], shape: [1, 1])],
                    traceParent: Self.parent)
            }
            await client.close()
        }
        let spans = tracer.base.finishedSpans
        let infers = spans.filter { $0.operationName == "inferwire.infer" }
        #expect(infers.count == 2)
        for infer in infers {
            #expect(infer.traceID == Self.parent.traceID)
            #expect(infer.spanContext.parentSpanID == Self.parent.parentSpanID)
            #expect(infer.kind == .server)
            #expect(infer.attributes["inferwire.model"]?.toSpanAttribute() == "mlp")
        }
        let succeeded = try #require(infers.first { $0.status == nil })
        let failed = try #require(infers.first { $0.status?.code == .error })
        #expect(failed.attributes["inferwire.status_code"]?.toSpanAttribute() == "INVALID_ARGUMENT")
        let children = spans.filter { $0.spanContext.parentSpanID == succeeded.spanContext.spanID }
        #expect(Set(children.map(\.operationName)) == ["inferwire.queue", "inferwire.compute"])
        let compute = try #require(children.first { $0.operationName == "inferwire.compute" })
        #expect(compute.traceID == Self.parent.traceID)
        #expect(compute.attributes["inferwire.batch_size"]?.toSpanAttribute() == 1)
        #expect(compute.startInstant.nanosecondsSinceEpoch >= succeeded.startInstant.nanosecondsSinceEpoch)
        #expect(compute.endInstant.nanosecondsSinceEpoch <= succeeded.endInstant.nanosecondsSinceEpoch)
        // The failed request never ran: no children.
        #expect(!spans.contains { $0.spanContext.parentSpanID == failed.spanContext.spanID })
    }

    @Test("an invalid traceparent is ignored: the request is served and its span starts a trace of its own")
    func invalidTraceparent() async throws {
        let tracer = W3CInMemoryTracer()
        let dispatcher = RequestDispatcher(registry: try makeRegistry(), tracing: RequestTracing(tracer: tracer))
        try await withServer(dispatcher: dispatcher) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            var request = inferRequest(
                "identity", [Tensor(name: "INPUT0", values: [Float](repeating: 1, count: 16), shape: [1, 16])])
            request.traceparent = "00-not-a-trace-01"
            let answer = try await client.infer(request)
            #expect(answer.outputs.count == 1)
            await client.close()
        }
        let infer = try #require(tracer.base.finishedSpans.first { $0.operationName == "inferwire.infer" })
        #expect(infer.spanContext.parentSpanID == nil)
        #expect(RequestTracing.bootstrapped == nil, "no tracer is bootstrapped in the tests")
    }

    @Test("traceparent values are parsed as the W3C recommendation says")
    func traceparentParsing() {
        let valid = TraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        #expect(valid == Self.parent)
        #expect(valid?.isSampled == true)
        #expect(valid?.description == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        // A later version may add fields; its first four are read.
        #expect(TraceParent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra") != nil)
        for invalid in [
            "", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            #expect(TraceParent(invalid) == nil, "\(invalid)")
        }
    }

    @Test("the access log records a sample of infer requests with code, duration, peer and trace id")
    func accessLog() async throws {
        let log = CapturedLog()
        let dispatcher = RequestDispatcher(registry: try makeRegistry(), accessLogSampleRate: 0.5)
        try await withServer(dispatcher: dispatcher, logger: log.logger, logsAccess: true) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            for _ in 0..<10 {
                _ = try await client.infer(
                    model: "identity",
                    inputs: [Tensor(name: "INPUT0", values: [Float](repeating: 1, count: 16), shape: [1, 16])],
                    traceParent: Self.parent)
            }
            _ = try await client.serverLive()
            await client.close()
        }
        let lines = log.entries.filter { $0.message == "infer" }
        #expect(lines.count == 5)
        for line in lines {
            #expect(line.metadata["model"] == "identity")
            #expect(line.metadata["code"] == "OK")
            #expect(line.metadata["trace_id"] == "\(Self.parent.traceID)")
            #expect(line.metadata["peer"] != nil)
            #expect(Int(line.metadata["duration_us"].map { "\($0)" } ?? "") != nil)
        }
    }

    @Test("without an access log, infer requests log nothing")
    func noAccessLog() async throws {
        let log = CapturedLog()
        try await withServer(dispatcher: RequestDispatcher(registry: try makeRegistry()), logger: log.logger) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            _ = try await client.infer(
                model: "identity",
                inputs: [Tensor(name: "INPUT0", values: [Float](repeating: 1, count: 16), shape: [1, 16])])
            await client.close()
        }
        #expect(!log.entries.contains { $0.message == "infer" })
    }

    @Test("JSON log lines are single JSON objects with escaped strings and metadata as keys")
    func jsonLines() throws {
        let line = JSONLogHandler.line(
            time: Date(timeIntervalSince1970: 1_796_644_800.125), level: .warning, label: "inferwire",
            message: "a \"quoted\"\nline\u{1}", metadata: ["model": "fraud", "message": "clash", "list": ["a", "b"]])
        #expect(line.hasSuffix("}\n"))
        #expect(line.dropLast().contains("\n") == false)
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["time"] as? String == "2026-12-07T12:00:00.125Z")
        #expect(object["level"] as? String == "warning")
        #expect(object["message"] as? String == "a \"quoted\"\nline\u{1}")
        #expect(object["model"] as? String == "fraud")
        #expect(object["metadata.message"] as? String == "clash")
        #expect(object["list"] as? [String] == ["a", "b"])
    }

    @Test(
        "the prediction log writes sampled requests per version and its feature statistics reach MODEL_STATISTICS and /metrics"
    )
    func predictionLog() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "inferwire-predictions-\(UUID().uuidString)"
        ).path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try PredictionLog(configuration: .init(directory: directory, sampleRate: 0.5))
        let dispatcher = RequestDispatcher(registry: try makeRegistry(), predictionLog: log)
        let box = ServerBox()
        try await withServer(dispatcher: dispatcher, onServer: box.store) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            for row in 0..<8 {
                _ = try await client.infer(
                    model: "fraud", version: 2,
                    inputs: [Tensor(name: "X", values: (0..<8).map { Float(row * 8 + $0) }, shape: [1, 8])],
                    traceParent: Self.parent)
            }
            log.flush()
            let statistics = try #require(try await client.modelStatistics("fraud").first { $0.version == 2 })
            #expect(statistics.features.count == 8)
            let first = try #require(statistics.features.first)
            // Rows 0, 2, 4, 6 were sampled: feature 0 saw 0, 16, 32, 48.
            #expect(first.input == "X" && first.index == 0 && first.count == 4)
            #expect(first.mean == 24 && first.min == 0 && first.max == 48)
            #expect(abs(first.variance - 320) < 1e-9)
            #expect(statistics.statusCounts[.ok] == 8)
            await client.close()
            let text = MetricsExporter(
                dispatcher: dispatcher, manager: nil, listeners: [("inference", try #require(box.server))]
            ).exposition()
            #expect(text.contains(#"inferwire_prediction_log_records_total 4"#), "\(text)")
            #expect(text.contains(#"inferwire_prediction_log_dropped_total{reason="buffer_full"} 0"#))
            #expect(text.contains(#"inferwire_feature_mean{model="fraud",version="2",input="X",feature="0"} 24"#))
            #expect(
                text.contains(#"inferwire_feature_values_total{model="fraud",version="2",input="X",feature="7"} 4"#))
        }
        log.close()
        let file = directory + "/fraud/2/predictions-000001.jsonl"
        let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 4)
        let record = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        #expect(record["trace_id"] as? String == Self.parent.traceID)
        #expect((record["outputs"] as? [String: Any])?.keys.sorted() == ["label", "probabilities"])
    }

    @Test("SERVER_READY says why the server is not ready")
    func readinessReasons() async throws {
        var contents = try ModelRepository(
            directory: packageRoot + "/examples/models", loaders: ModelRepository.builtinLoaders
        ).loadAll(logger: quiet)
        contents.failures.append(ModelLoadFailure(model: "broken", version: 3, reason: "the file is truncated"))
        let dispatcher = RequestDispatcher(registry: ModelRegistry(contents: contents))
        try await withServer(dispatcher: dispatcher) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            #expect(try await client.serverReady() == false)
            let reasons = try await client.serverNotReadyReasons()
            #expect(reasons.contains { $0.contains("broken") && $0.contains("the file is truncated") }, "\(reasons)")
            await client.close()
        }
        let healthy = RequestDispatcher(registry: try makeRegistry())
        try await withServer(dispatcher: healthy) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            #expect(try await client.serverNotReadyReasons().isEmpty)
            await client.close()
        }
    }
}
