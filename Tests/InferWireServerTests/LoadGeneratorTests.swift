import Foundation
import InferWireBench
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireProto
import InferWireServer
import Testing

/// `inferwire bench`'s engine against real servers on loopback.
@Suite("Load generator over TCP", .timeLimit(.minutes(2)))
struct LoadGeneratorTests {
    static let quick = MeasurementSettings(
        warmup: .milliseconds(200), window: .milliseconds(250), maxWindows: 6,
        rule: StabilityRule(windows: 3, tolerance: 0.5),
        openDuration: .seconds(1))

    func addSubRequest() -> Inferwire_V1_InferRequest {
        inferRequest("add_sub", addSubInputs([1, 2, 3, 4], [10, 20, 30, 40]))
    }

    /// Cumulative statistics of one model, as `inferwire bench` asks for them.
    func counters(_ client: InferWireClient, _ model: String) -> @Sendable () async -> [String: ServerTimes.Counters]? {
        {
            guard let stats = try? await client.modelStatistics(model) else { return nil }
            return Dictionary(
                uniqueKeysWithValues: stats.map {
                    (
                        "\($0.version)",
                        ServerTimes.Counters(
                            requests: $0.requestCount, executions: $0.executionCount,
                            queueMicros: UInt64($0.queueTime.inMicroseconds),
                            computeMicros: UInt64($0.computeTime.inMicroseconds))
                    )
                })
        }
    }

    @Test("a closed-loop level counts every answer, by version, with the server's own count for the same period")
    func closedLoop() async throws {
        try await withServer { port in
            let control = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            let generator = try await LoadGenerator.connect(
                servers: [("127.0.0.1", port)], connectionsPerServer: 2, request: self.addSubRequest(),
                compression: false)
            let runner = LevelRunner(
                generator: generator, settings: Self.quick, serverCounters: self.counters(control, "add_sub"))
            let result = try await runner.run(.closed(concurrency: 8))
            await generator.close()
            // Everything the server answered during the test, warm-up and drain included.
            let answeredByServer = try await control.modelStatistics("add_sub").reduce(0) { $0 + $1.requestCount }
            await control.close()

            #expect(result.errors.isEmpty)
            #expect(result.requests > 100)
            #expect(result.versions == ["1": result.requests])
            #expect(result.latency.count == result.requests)
            #expect(
                result.latency.p50 > 0 && result.latency.p50 <= result.latency.p99
                    && result.latency.p99 <= result.latency.max)
            #expect(result.windows.first?.warmup == true)
            #expect(result.windows.filter { !$0.warmup }.count >= 3)
            #expect(result.stopReason == (result.stable ? "stable" : "window limit"))
            // The server's count covers the measured period, its edges marked by statistics
            // calls a little after the client's tallies were taken. How much later depends on
            // the machine's speed, so only bounds that hold at any speed are checked: it is a
            // part of everything the server answered (the warm-up is not in it), and it holds
            // every window's count (below).
            let server = try #require(result.server)
            #expect(server.requests > 0 && server.requests < answeredByServer)
            #expect(server.computeMicros > 0)
            // Each measured window has the server's view of it too; together they cover
            // the level up to its last window.
            let measured = result.windows.filter { !$0.warmup }
            #expect(measured.allSatisfy { $0.server != nil })
            let windowRequests = measured.reduce(0) { $0 + ($1.server?.requests ?? 0) }
            #expect(windowRequests > 0 && windowRequests <= server.requests)
        }
    }

    @Test("an open-loop level sends on schedule whatever is in flight, and counts every due send")
    func openLoop() async throws {
        try await withServer { port in
            let generator = try await LoadGenerator.connect(
                servers: [("127.0.0.1", port)], connectionsPerServer: 2, request: self.addSubRequest(),
                compression: true)
            let runner = LevelRunner(generator: generator, settings: Self.quick)
            let result = try await runner.run(.open(rate: 400, poisson: false))
            await generator.close()

            #expect(result.errors.isEmpty)
            // 400 sends due per measured second, however long the windows really lasted. The
            // windows run on the real clock, whose ticks land late on a machine whose cores are
            // busy: the bounds allow a quarter either way, which a wrong rate (half, double)
            // still breaks.
            let seconds = result.windows.filter { !$0.warmup }.reduce(0) { $0 + $1.seconds }
            #expect(seconds > 0.5)
            #expect(abs(Double(result.due) - 400 * seconds) <= 0.25 * 400 * seconds + 4)
            #expect(result.requests + result.skipped + 8 >= result.due)
            #expect(abs(result.throughput - 400) <= 100)
            #expect(result.mode == "open" && result.askedRate == 400)
        }
    }

    @Test("requests beyond the server's per-connection limit are held back, not sent to be refused")
    func serverLimit() async throws {
        try await withServer(limits: .init(maxConcurrentRequests: 3)) { port in
            let generator = try await LoadGenerator.connect(
                servers: [("127.0.0.1", port)], connectionsPerServer: 1, request: delayRequest(ms: 2),
                compression: false)
            #expect(generator.serverConcurrencyLimit == 3)
            let runner = LevelRunner(generator: generator, settings: Self.quick)
            let result = try await runner.run(.closed(concurrency: 16))
            await generator.close()
            #expect(result.errors.isEmpty)
            // Three in flight at ≈ 2 ms each cannot exceed ≈ 1500 req/s.
            #expect(result.throughput > 0 && result.throughput < 1600)
        }
    }

    @Test("failed requests are counted by status code")
    func errors() async throws {
        try await withServer { port in
            let generator = try await LoadGenerator.connect(
                servers: [("127.0.0.1", port)], connectionsPerServer: 1,
                request: inferRequest("failing", [Tensor(name: "X", values: [Float(1)], shape: [1])]),
                compression: false)
            let runner = LevelRunner(generator: generator, settings: Self.quick)
            let result = try await runner.run(.closed(concurrency: 4))
            await generator.close()
            #expect(result.latency.count == 0)
            #expect(result.errors.count == 1)
            #expect((result.errors["INTERNAL"] ?? 0) > 10)
        }
    }

    @Test("a management action under load is reported with errors and p99 before and after it")
    func actionUnderLoad() async throws {
        let root = try makeEchoRepository()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try await withManagedServer(repository: root) { port, _ in
            let admin = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            let request = inferRequest("echo", [Tensor(name: "X", values: [1, 2, 3, 4] as [Float], shape: [1, 4])])
            let generator = try await LoadGenerator.connect(
                servers: [("127.0.0.1", port)], connectionsPerServer: 2, request: request, compression: false)
            let runner = LevelRunner(generator: generator, settings: Self.quick)
            let action = ScheduledAction(name: "traffic echo 1 50", at: .milliseconds(500), after: .milliseconds(500)) {
                let rollout = try await admin.setTraffic("echo", canary: 1, percent: 50)
                return rollout.description
            }
            let result = try await runner.run(.closed(concurrency: 8), action: action)
            await generator.close()
            await admin.close()

            #expect(result.stopReason == "action")
            #expect(result.errors.isEmpty)
            let event = try #require(result.events.first)
            #expect(event.succeeded)
            #expect(event.outcome == "stable 2, canary 1 at 50%")
            #expect(event.before.requests > 0 && event.after.requests > 0)
            #expect(event.before.errors == 0 && event.after.errors == 0)
            #expect(event.before.p99 > 0 && event.after.p99 > 0)
            // Before the action only the stable version answered; after it both did.
            #expect(Set(result.versions.keys) == ["1", "2"])
            #expect(result.windows.last.map { $0.start + $0.seconds } ?? 0 >= event.at)
        }
    }
}

@Suite("Load generator by request count", .timeLimit(.minutes(1)))
struct RequestCountTests {
    @Test("a closed-loop level measured by count ends once that many answers are in, with no more in flight than asked")
    func count() async throws {
        try await withServer { port in
            let generator = try await LoadGenerator.connect(
                servers: [("127.0.0.1", port)], connectionsPerServer: 3,
                request: inferRequest("add_sub", addSubInputs([1, 2, 3, 4], [10, 20, 30, 40])), compression: false)
            var settings = LoadGeneratorTests.quick
            settings.requestCount = 2000
            settings.window = .seconds(5)
            let result = try await LevelRunner(generator: generator, settings: settings).run(.closed(concurrency: 4))
            await generator.close()
            #expect(result.stopReason == "request count")
            #expect(result.errors.isEmpty)
            // Exactly the count, plus at most the requests already in flight when counting began.
            #expect(result.requests >= 2000 && result.requests <= 2000 + 4)
            // It ended on the count, long before the 5 s window.
            #expect(result.windows.filter { !$0.warmup }.count == 1)
            #expect(result.windows.last!.seconds < 4.5)
        }
    }

    @Test("a count not reached within the window limit ends the level there, and says so")
    func windowLimit() async throws {
        try await withServer { port in
            let generator = try await LoadGenerator.connect(
                servers: [("127.0.0.1", port)], connectionsPerServer: 1, request: delayRequest(ms: 5),
                compression: false)
            var settings = LoadGeneratorTests.quick
            settings.requestCount = 1_000_000
            settings.maxWindows = 2
            let result = try await LevelRunner(generator: generator, settings: settings).run(.closed(concurrency: 2))
            await generator.close()
            #expect(result.stopReason == "window limit")
            #expect(result.stable == false)
            #expect(result.windows.filter { !$0.warmup }.count == 2)
            #expect(result.requests > 0 && result.requests < 1000)
        }
    }
}
