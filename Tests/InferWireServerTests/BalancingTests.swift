import Foundation
import InferWireBench
import InferWireCore
import InferWireEngine
import InferWireProto
import InferWireServer
import InferWireWire
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import Testing

@testable import InferWireClient

#if canImport(Glibc)
    import Glibc
#endif

// MARK: Plain values: parsing, picking, retrying

@Suite("Balancing: addresses, picks and retry rules")
struct BalancingValueTests {
    @Test("server addresses parse as HOST:PORT and [IPv6]:PORT; bad ones say what is expected")
    func endpoints() throws {
        #expect(try Endpoint(parsing: "10.0.0.1:8500") == Endpoint(host: "10.0.0.1", port: 8500))
        #expect(try Endpoint(parsing: " inferwire.internal:9000 ") == Endpoint(host: "inferwire.internal", port: 9000))
        #expect(try Endpoint(parsing: "[::1]:8500") == Endpoint(host: "::1", port: 8500))
        #expect(Endpoint(host: "::1", port: 8500).description == "[::1]:8500")
        #expect(Endpoint(host: "127.0.0.1", port: 1).isAddress)
        #expect(!Endpoint(host: "localhost", port: 1).isAddress)
        for bad in ["10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", ":8500", "host:port", "[::1]8500", "::1:8500"] {
            #expect(throws: InferWireError.self, "\(bad)") { try Endpoint(parsing: bad) }
        }
        do {
            _ = try Endpoint(parsing: "::1:8500")
        } catch {
            #expect(error.message.contains("brackets"))
        }
    }

    @Test("--server lists: repeated and comma-separated addresses, duplicates once; dns:///NAME:PORT alone")
    func targets() throws {
        let list = try BalancedClient.Target(parsing: ["127.0.0.1:1,127.0.0.1:2", " 127.0.0.1:3 ", "127.0.0.1:1"])
        guard case .endpoints(let endpoints) = list.kind else {
            Issue.record("a list parsed as \(list)")
            return
        }
        #expect(endpoints.map(\.port) == [1, 2, 3])
        for text in ["dns:///inferwire.internal:8500", "dns:inferwire.internal:8500", "DNS:///inferwire.internal:8500"]
        {
            let dns = try BalancedClient.Target(parsing: [text])
            guard case .dns(let host, let port) = dns.kind else {
                Issue.record("\(text) parsed as \(dns)")
                continue
            }
            #expect(host == "inferwire.internal" && port == 8500)
            #expect(dns.description == "dns:///inferwire.internal:8500")
        }
        for bad in [
            [], [" , "], ["dns:///a:1", "b:2"], ["dns:///a:1,b:2"], ["dns://8.8.8.8/a:1"], ["dns:///a"],
            ["a:1,b"],
        ] {
            #expect(throws: InferWireError.self, "\(bad)") { try BalancedClient.Target(parsing: bad) }
        }
    }

    @Test("a name's addresses: IPv4 first by default, each address once")
    func addressPreference() {
        let addresses = ["::1", "127.0.0.1", "::1", "10.0.0.2", "127.0.0.1"]
        #expect(AddressPreference.preferIPv4.filter(addresses) == ["127.0.0.1", "10.0.0.2"])
        #expect(AddressPreference.preferIPv6.filter(addresses) == ["::1"])
        #expect(AddressPreference.all.filter(addresses) == ["::1", "127.0.0.1", "10.0.0.2"])
        #expect(AddressPreference.preferIPv4.filter(["::1", "fe80::1"]) == ["::1", "fe80::1"])
    }

    @Test("power of two choices: of the two drawn, the one with fewer calls in flight")
    func prefersLessLoaded() {
        let now = ContinuousClock.now
        let candidates = [5, 0, 3, 9].map { EndpointPicker.Candidate(outstanding: $0) }
        // Draws index 0 then 1 of the three left: endpoints 0 and 2; 2 has fewer in flight.
        var random = ScriptedRandom([(0, 4), (1, 3)])
        #expect(EndpointPicker.pick(candidates, now: now, using: &random) == 2)
        // Draws 3, then 0: endpoints 3 and 0; 0 has fewer.
        random = ScriptedRandom([(3, 4), (0, 3)])
        #expect(EndpointPicker.pick(candidates, now: now, using: &random) == 0)
        // Draws 2, then 1 of the rest (endpoint 1): endpoint 1 is idle.
        random = ScriptedRandom([(2, 4), (1, 3)])
        #expect(EndpointPicker.pick(candidates, now: now, using: &random) == 1)
        // A tie goes to the first drawn.
        let even = [2, 2].map { EndpointPicker.Candidate(outstanding: $0) }
        random = ScriptedRandom([(1, 2), (0, 1)])
        #expect(EndpointPicker.pick(even, now: now, using: &random) == 1)
        // Whatever is drawn, the busiest of more than two never wins.
        var system = SystemRandomNumberGenerator()
        for _ in 0..<200 { #expect(EndpointPicker.pick(candidates, now: now, using: &system) != 3) }
    }

    @Test("every pair of distinct endpoints can be drawn, never one twice")
    func drawsTwoDistinct() {
        for count in 2...5 {
            var pairs = Set<[Int]>()
            for first in 0..<count {
                for second in 0..<(count - 1) {
                    var random = ScriptedRandom([(first, count), (second, count - 1)])
                    let (a, b) = EndpointPicker.drawTwo(from: count, using: &random)
                    #expect(a != b && (0..<count).contains(a) && (0..<count).contains(b))
                    pairs.insert([a, b])
                }
            }
            #expect(pairs.count == count * (count - 1))
        }
    }

    @Test("endpoints backing off are skipped; when all are, the one whose back-off ends first is tried")
    func backoff() {
        let now = ContinuousClock.now
        var random = ScriptedRandom([(0, 2), (0, 1)])
        let candidates = [
            EndpointPicker.Candidate(outstanding: 0, backingOffUntil: now + .seconds(5)),
            EndpointPicker.Candidate(outstanding: 7),
            EndpointPicker.Candidate(outstanding: 0, backingOffUntil: now + .seconds(1)),
        ]
        // Only endpoint 1 is ready, however busy.
        #expect(EndpointPicker.pick(candidates, now: now, using: &random) == 1)
        // A back-off that has ended no longer counts.
        #expect(EndpointPicker.pick(candidates, now: now + .seconds(1), using: &random) != 1)
        var down = candidates
        down[1].backingOffUntil = now + .seconds(3)
        #expect(EndpointPicker.pick(down, now: now, using: &random) == 2)
        #expect(EndpointPicker.pick([], now: now, using: &random) == nil)
    }

    @Test("a call tries endpoints it has not tried first; once it tried them all, any again")
    func untriedFirst() {
        let now = ContinuousClock.now
        var random = SystemRandomNumberGenerator()
        let candidates = [
            EndpointPicker.Candidate(outstanding: 0, tried: true),
            EndpointPicker.Candidate(outstanding: 50),
            EndpointPicker.Candidate(outstanding: 0, tried: true),
        ]
        for _ in 0..<50 { #expect(EndpointPicker.pick(candidates, now: now, using: &random) == 1) }
        let allTried = candidates.map { EndpointPicker.Candidate(outstanding: $0.outstanding, tried: true) }
        var seen = Set<Int>()
        for _ in 0..<200 { seen.insert(EndpointPicker.pick(allTried, now: now, using: &random)!) }
        #expect(seen == [0, 2])
    }

    @Test("what is sent again: never-sent calls always, lost or refused ones only if idempotent and retrying")
    func retryRule() {
        typealias Kind = InferWireClient.AttemptFailure.Kind
        let table: [(Kind, RetryRule.Effect, Bool, Bool)] = [
            (.connectFailed, .idempotent, true, true), (.connectFailed, .idempotent, false, true),
            (.connectFailed, .management, true, true), (.notSent, .management, false, true),
            (.notSent, .idempotent, false, true),
            (.unavailable, .idempotent, true, true), (.unavailable, .idempotent, false, false),
            (.unavailable, .management, true, false),
            (.connectionLost, .idempotent, true, true), (.connectionLost, .idempotent, false, false),
            (.connectionLost, .management, true, false),
            (.final, .idempotent, true, false), (.final, .management, true, false),
        ]
        for (kind, effect, enabled, expected) in table {
            #expect(
                RetryRule.mayRetry(after: kind, effect: effect, retriesEnabled: enabled) == expected,
                "\(kind) \(effect) retries \(enabled)")
        }
    }

    @Test("connect back-off grows by the multiplier up to its maximum")
    func backoffGrowth() {
        let backoff = BalancedClient.Configuration.Backoff(initial: .seconds(1), maximum: .seconds(10), multiplier: 3)
        #expect((1...5).map { backoff.delay(afterFailures: $0) } == [1, 3, 9, 10, 10].map { Duration.seconds($0) })
        #expect(BalancedClient.Configuration.Backoff.defaults.delay(afterFailures: 100) == .seconds(30))
        #expect(BalancedClient.Configuration.defaults { $0.retries = .disabled }.retries.enabled == false)
    }
}

// MARK: Over real servers

@Suite("Balancing over servers", .serialized, .timeLimit(.minutes(3)))
struct BalancingTests {
    @Test("calls from many tasks are spread over three servers")
    func spreads() async throws {
        try await withFleet(3) { fleet in
            let client = try await BalancedClient.connect(to: .endpoints(fleet.endpoints))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<30 {
                    group.addTask {
                        for _ in 0..<10 {
                            let result = try await client.infer(
                                model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [1, 1, 1, 1]))
                            #expect(result["OUTPUT0"]?.values(as: Float.self) == [2, 3, 4, 5])
                        }
                    }
                }
                try await group.waitForAll()
            }
            // Each server's own count of what it answered.
            var served: [Int] = []
            for (_, server) in await client.endpointClients() {
                served.append(Int(try await server.modelStatistics("add_sub").reduce(0) { $0 + $1.requestCount }))
            }
            #expect(served.count == 3)
            #expect(served.reduce(0, +) == 300)
            #expect(served.allSatisfy { $0 >= 30 }, "\(served)")
            #expect(client.statistics.attempts == 300 && client.statistics.retries == 0)
            await client.close()
        }
    }

    @Test("a server shut down gracefully under load: GOAWAY, its calls finish, the rest go elsewhere, none fail")
    func gracefulShutdown() async throws {
        try await withFleet(3) { fleet in
            let client = try await BalancedClient.connect(to: .endpoints(fleet.endpoints))
            let leaving = fleet.members[1]
            // Calls reaching the leaving server wait there, so it has some in flight at GOAWAY.
            leaving.gate.close()
            let load = Load(client: client)
            let workers = Task { await load.run(workers: 16) }
            try await eventually("a call is running on the leaving server") { leaving.gate.started >= 1 }
            let shutdown = Task { await fleet.stop(1) }
            try await eventually("the client has seen GOAWAY from the leaving server") {
                client.statistics.endpoints[1].isConnectionOpen == false
            }
            leaving.gate.open()
            await shutdown.value
            let afterShutdown = load.succeeded
            try await eventually("200 calls succeed after the shutdown") { load.succeeded >= afterShutdown + 200 }
            load.stop()
            await workers.value
            #expect(load.failures == [])
            #expect(leaving.gate.started >= 1)
            #expect(load.succeeded >= 200)
            await client.close()
        }
    }

    @Test(
        "a server whose connection is cut mid-load: with retries its calls go elsewhere; without, only those in flight there fail",
        arguments: [true, false])
    func abruptClose(retries: Bool) async throws {
        try await withFleet(3, gatesOpen: false) { fleet in
            // The third server is reached through a proxy that can cut every connection at once.
            let proxy = try await ChaosProxy.start(forwardingTo: fleet.members[2].port)
            let endpoints = [fleet.endpoints[0], fleet.endpoints[1], proxy.endpoint]
            let client = try await BalancedClient.connect(
                to: .endpoints(endpoints),
                configuration: .init(retries: retries ? .defaults : .disabled))
            // 24 calls, each held where it runs: power of two choices spreads them.
            let calls = 24
            let outcomes = Task {
                await withTaskGroup(of: Bool.self) { group in
                    for _ in 0..<calls {
                        group.addTask { (try? await client.infer(gateRequest())) != nil }
                    }
                    return await group.reduce(into: [Bool]()) { $0.append($1) }
                }
            }
            try await eventually("every call has reached a server") { fleet.gatesStarted == calls }
            let inFlightThere = fleet.members[2].gate.started
            try #require(inFlightThere > 0, "no call went to the third server")
            #expect(client.outstanding(at: proxy.endpoint) == inFlightThere)
            try await proxy.kill()
            if retries {
                // The calls cut off are sent again, to the other two servers.
                try await eventually("the cut calls run again elsewhere") {
                    fleet.members[0].gate.started + fleet.members[1].gate.started == calls
                }
            }
            fleet.members[0].gate.open()
            fleet.members[1].gate.open()
            let failures = await outcomes.value.filter { !$0 }.count
            if retries {
                #expect(failures == 0)
                #expect(client.statistics.retries == inFlightThere)
            } else {
                #expect(failures == inFlightThere)
                #expect(client.statistics.retries == 0)
            }
            // Load goes on without the cut server: its connects are refused and it backs off.
            for _ in 0..<30 { _ = try await client.infer(gateRequest()) }
            fleet.members[2].gate.open()
            await client.close()
        }
    }

    @Test("a management call is never sent twice; a connect that fails before sending goes elsewhere")
    func managementNotRetried() async throws {
        let root = try makeEchoRepository()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try await withManagedServer(repository: root) { port, _ in
            let real = Endpoint(host: "127.0.0.1", port: port)
            // First choice: an endpoint that answers every call UNAVAILABLE.
            let refusing = try await ScriptedServer.start { _ in .unavailable }
            let client = try await BalancedClient.connect(
                to: .endpoints([refusing.endpoint, real]), configuration: .defaults, random: FirstChoice(),
                now: { .now })
            do {
                _ = try await client.listModels()
                Issue.record("a management call answered UNAVAILABLE succeeded")
            } catch let error as InferWireError {
                #expect(error.code == .unavailable)
            }
            #expect(refusing.requests.count == 1)
            #expect(client.statistics.attempts == 1)
            // Inference is sent again, to the real server.
            let echo = try await client.infer(
                model: "echo", inputs: [Tensor(name: "X", values: [1, 2, 3, 4] as [Float], shape: [1, 4])])
            #expect(echo["Y"]?.values(as: Float.self) == [1, 2, 3, 4])
            #expect(refusing.requests.count == 2)
            #expect(client.statistics.attempts == 3 && client.statistics.retries == 1)
            await client.close()
            // Without retries, inference is sent once too.
            let once = try await BalancedClient.connect(
                to: .endpoints([refusing.endpoint, real]), configuration: .init(retries: .disabled),
                random: FirstChoice(), now: { .now })
            await #expect(throws: InferWireError.self) {
                try await once.infer(
                    model: "echo", inputs: [Tensor(name: "X", values: [1, 2, 3, 4] as [Float], shape: [1, 4])])
            }
            #expect(once.statistics.attempts == 1)
            #expect(refusing.requests.count == 3)
            await once.close()
            await refusing.close()

            // An endpoint that cuts the connection while the call is in flight.
            let cutting = try await ScriptedServer.start { _ in .reset }
            let second = try await BalancedClient.connect(
                to: .endpoints([cutting.endpoint, real]), configuration: .defaults, random: FirstChoice(),
                now: { .now })
            do {
                _ = try await second.promote("echo")
                Issue.record("a management call whose connection was cut succeeded")
            } catch let error as InferWireError {
                #expect(error.code == .unavailable)
            }
            #expect(second.statistics.attempts == 1)
            #expect(cutting.requests.count == 1)
            await second.close()
            await cutting.close()

            // An endpoint nothing listens on, first choice again (no back-off): the call goes to the next.
            let nothing = try await unusedEndpoint()
            let third = try await BalancedClient.connect(
                to: .endpoints([nothing, real]),
                configuration: .init(backoff: .init(initial: .zero, maximum: .zero)), random: FirstChoice(),
                now: { .now })
            let models = try await third.listModels()
            #expect(models.map(\.name) == ["echo"])
            let attempts = third.statistics
            #expect(attempts.attempts == 2 && attempts.retries == 1)
            // Once at start, once for the call.
            #expect(attempts.endpoints[0].connectFailures == 2)
            await third.close()
        }
    }

    @Test("one client alone does not send again a call whose connection was cut while it was in flight")
    func singleClientLostCall() async throws {
        let cutting = try await ScriptedServer.start { _ in .reset }
        let client = try await InferWireClient.connect(host: "127.0.0.1", port: cutting.port)
        do {
            _ = try await client.serverLive()
            Issue.record("a call whose connection was cut succeeded")
        } catch let error as InferWireError {
            #expect(error.code == .unavailable)
        }
        // It may have run: PROTOCOL.md section 5 leaves sending it again to the caller.
        #expect(cutting.requests.count == 1)
        await client.close()
        await cutting.close()
    }

    @Test("an endpoint whose connect failed is skipped for its back-off, then tried again")
    func skipsBackingOff() async throws {
        try await withServer { port in
            let time = TestTime()
            let nothing = try await unusedEndpoint()
            let client = try await BalancedClient.connect(
                to: .endpoints([nothing, Endpoint(host: "127.0.0.1", port: port)]),
                configuration: .init(backoff: .init(initial: .seconds(3600), maximum: .seconds(86400))),
                random: FirstChoice(), now: { time.now })
            #expect(client.statistics.endpoints[0].connectFailures == 1)
            for _ in 0..<20 { _ = try await client.serverLive() }
            var statistics = client.statistics
            #expect(statistics.endpoints[0].attempts == 0)
            #expect(statistics.endpoints[1].attempts == 20)
            // After the back-off the first choice is the failed endpoint again; it fails, and
            // its next back-off is twice as long.
            time.advance(by: .seconds(3601))
            #expect(try await client.serverLive())
            statistics = client.statistics
            #expect(statistics.endpoints[0].attempts == 1)
            #expect(statistics.endpoints[0].connectFailures == 2)
            #expect(statistics.endpoints[0].backingOffUntil == time.now + .seconds(7200))
            #expect(statistics.retries == 1)
            await client.close()
        }
        // No endpoint at all: connect says so, naming each.
        let first = try await unusedEndpoint()
        let second = try await unusedEndpoint()
        do {
            _ = try await BalancedClient.connect(to: .endpoints([first, second]))
            Issue.record("connected to nothing")
        } catch let error as InferWireError {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("no server could be reached (2 tried)"), "\(error.message)")
            #expect(
                error.message.contains("cannot connect to \(first): connection refused")
                    && error.message.contains("cannot connect to \(second): connection refused"), "\(error.message)")
            #expect(!error.message.contains("AttemptFailure"), "\(error.message)")
        }
    }

    @Test("with every server down, a call probes the one whose back-off ends first, and only it")
    func wholeFleetDown() async throws {
        try await withFleet(1) { fleet in
            let time = TestTime()
            let nothing = try await unusedEndpoint()
            let client = try await BalancedClient.connect(
                to: .endpoints([nothing, fleet.endpoints[0]]),
                configuration: .init(backoff: .init(initial: .seconds(60), maximum: .seconds(600))),
                random: FirstChoice(), now: { time.now })
            #expect(try await client.serverLive())
            await fleet.stop(0)
            // The stopped server's reconnect fails; the other is backing off: probed once, fails.
            await #expect(throws: InferWireError.self) { try await client.serverLive() }
            #expect(client.statistics.attempts == 3)
            // Both back off now (the second for 60 s, the first for 120 s): one probe, of the second.
            await #expect(throws: InferWireError.self) { try await client.serverLive() }
            let statistics = client.statistics
            #expect(statistics.attempts == 4)
            #expect(statistics.endpoints.map(\.attempts) == [1, 3])
            await client.close()
        }
    }

    @Test("the deadline covers every attempt: a retry gets what is left of it, and none starts after it")
    func deadlineAcrossRetries() async throws {
        let time = TestTime()
        let timeouts = Mutex<[UInt32]>([])
        // Each endpoint notes the deadline it was given, lets 6 s pass, and cuts the connection.
        let script: @Sendable (FrameHeader) -> ScriptedServer.Reply = { header in
            timeouts.withLock { $0.append(header.timeoutMicros) }
            time.advance(by: .seconds(6))
            return .reset
        }
        let first = try await ScriptedServer.start(script)
        let second = try await ScriptedServer.start(script)
        let client = try await BalancedClient.connect(
            to: .endpoints([first.endpoint, second.endpoint]), configuration: .defaults, random: FirstChoice(),
            now: { time.now })
        do {
            _ = try await client.infer(
                model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [1, 1, 1, 1]), timeout: .seconds(10))
            Issue.record("a call succeeded against servers that never answer")
        } catch let error as InferWireError {
            #expect(error.code == .deadlineExceeded, "\(error)")
            #expect(error.message.contains("2 attempts"), "\(error.message)")
        }
        // 10 s, then the 4 s left; a third attempt (3 are allowed) would start past the deadline.
        #expect(timeouts.withLock { $0 } == [10_000_000, 4_000_000])
        #expect(client.statistics.attempts == 2)
        await client.close()
        await first.close()
        await second.close()
    }

    @Test("a DNS name with a port resolves to endpoints: localhost is 127.0.0.1 (and ::1 when asked for all)")
    func resolvesLocalhost() async throws {
        try await withServer { port in
            let all = try await DNSResolver(host: "localhost", port: port, preference: .all).resolve()
            #expect(all.contains(Endpoint(host: "127.0.0.1", port: port)), "\(all)")
            #expect(all.allSatisfy { ($0.host == "::1" || $0.host.hasPrefix("127.")) && $0.port == port }, "\(all)")
            #expect(Set(all).count == all.count)
            let client = try await BalancedClient.connect(to: try .init(parsing: ["dns:///localhost:\(port)"]))
            #expect(client.endpoints == [Endpoint(host: "127.0.0.1", port: port)])
            #expect(try await client.serverLive())
            await client.close()
        }
        await #expect(throws: InferWireError.self) {
            try await DNSResolver(host: "no-such-host.invalid", port: 1).resolve()
        }
    }

    @Test("a new lookup adds endpoints and drains those gone: their calls finish, then they close")
    func reresolves() async throws {
        try await withFleet(3) { fleet in
            let resolver = ListResolver([fleet.endpoints[0], fleet.endpoints[1]])
            let client = try await BalancedClient.connect(
                to: .resolver(resolver), configuration: .init(resolution: .init(interval: nil)),
                random: FirstChoice(), now: { .now })
            #expect(client.endpoints == [fleet.endpoints[0], fleet.endpoints[1]])
            // A call held on the first endpoint (the first choice) while it leaves the list.
            fleet.members[0].gate.close()
            let held = Task { try await client.infer(gateRequest()) }
            try await eventually("the held call runs on the first server") { fleet.members[0].gate.started == 1 }

            resolver.set([fleet.endpoints[1], fleet.endpoints[2]])
            try await client.refreshEndpoints()
            #expect(client.endpoints == [fleet.endpoints[1], fleet.endpoints[2]])
            let draining = client.statistics.endpoints.filter(\.isDraining)
            #expect(draining.map(\.endpoint) == [fleet.endpoints[0]] && draining.first?.outstanding == 1)
            try await eventually("the added endpoint is connected") {
                client.statistics.endpoints.contains { $0.endpoint == fleet.endpoints[2] && $0.isConnectionOpen }
            }
            for _ in 0..<20 { _ = try await client.infer(gateRequest()) }
            // None went to the endpoint that left.
            #expect(fleet.members[0].gate.started == 1)
            #expect(fleet.members[1].gate.started + fleet.members[2].gate.started == 20)

            fleet.members[0].gate.open()
            _ = try await held.value
            try await eventually("the drained endpoint is closed") {
                fleet.members[0].server.connectionCounts.open == 0
                    && !client.statistics.endpoints.contains { $0.endpoint == fleet.endpoints[0] }
            }
            // A lookup that fails keeps the endpoints.
            resolver.set([])
            await #expect(throws: InferWireError.self) { try await client.refreshEndpoints() }
            #expect(client.endpoints == [fleet.endpoints[1], fleet.endpoints[2]])
            #expect(client.lastResolutionFailure != nil)
            await client.close()
        }
    }

    @Test("the bench's balanced generator measures closed levels by count and open levels on schedule over a fleet")
    func balancedGenerator() async throws {
        try await withFleet(2) { fleet in
            let client = try await BalancedClient.connect(to: .endpoints(fleet.endpoints))
            let generator = BalancedLoadGenerator(
                client: client, request: inferRequest("add_sub", addSubInputs([1, 2, 3, 4], [10, 20, 30, 40])))
            var settings = LoadGeneratorTests.quick
            settings.requestCount = 500
            settings.window = .seconds(5)
            let closed = try await LevelRunner(generator: generator, settings: settings).run(.closed(concurrency: 4))
            #expect(closed.stopReason == "request count")
            #expect(closed.errors.isEmpty)
            // Exactly the count, plus at most the requests already in flight when counting began.
            #expect(closed.requests >= 500 && closed.requests <= 504)
            #expect(closed.versions == ["1": closed.requests])
            #expect(closed.latency.count == closed.requests)
            #expect(client.statistics.endpoints.allSatisfy { $0.attempts > 0 })

            let open = try await LevelRunner(generator: generator, settings: LoadGeneratorTests.quick).run(
                .open(rate: 200, poisson: true))
            #expect(open.errors.isEmpty)
            #expect(open.mode == "open" && open.due > 0)
            #expect(open.requests + open.skipped + 8 >= open.due)
            // Nothing is left in flight after a level.
            #expect(client.statistics.endpoints.allSatisfy { $0.outstanding == 0 })
            await client.close()
        }
    }

    @Test("inferwire infer, models and bench take several --server addresses and balance over them")
    func commandLine() async throws {
        let binary = packageRoot + "/.build/debug/inferwire"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            Issue.record("needs \(binary) (swift build)")
            return
        }
        try await withFleet(3) { fleet in
            let servers = fleet.endpoints.map(\.description)
            let infer = try await runCommand(
                binary,
                [
                    "infer", "--server", "\(servers[0]),\(servers[1])", "--server", servers[2], "--no-retries",
                    "--model", "add_sub", "--input", "INPUT0=[1,2,3,4]", "--input", "INPUT1=[10,20,30,40]",
                ])
            #expect(infer.status == 0, "\(infer.error)")
            #expect(infer.output.contains("[11.0, 22.0, 33.0, 44.0]"), "\(infer.output)")

            // Management needs servers that manage their models.
            let roots = [try makeEchoRepository(), try makeEchoRepository()]
            defer { for root in roots { try? FileManager.default.removeItem(atPath: root) } }
            try await withManagedServer(repository: roots[0]) { first, _ in
                try await withManagedServer(repository: roots[1]) { second, _ in
                    let models = try await runCommand(
                        binary, ["models", "list", "--server", "127.0.0.1:\(first),127.0.0.1:\(second)"])
                    #expect(models.status == 0, "\(models.error)")
                    #expect(models.output.contains("echo: "), "\(models.output)")
                }
            }

            let bench = try await runCommand(
                binary,
                [
                    "bench", "--server", servers[0], "--server", "\(servers[1]),\(servers[2])", "--model", "add_sub",
                    "--concurrency", "4", "--requests", "300", "--warmup", "0", "--window", "0.5", "--quiet",
                    "--no-retries",
                ])
            #expect(bench.status == 0, "\(bench.error)")
            #expect(bench.output.contains("balanced over 3 server(s)"), "\(bench.output)")
            #expect(bench.output.contains("4 in flight"), "\(bench.output)")
            #expect(bench.output.contains("balancing: "), "\(bench.output)")
            #expect(!bench.output.contains("errors UNAVAILABLE"), "\(bench.output)")

            let bad = try await runCommand(binary, ["infer", "--server", "::1:8500", "--model", "m", "--random"])
            #expect(bad.status != 0)
            #expect(bad.error.contains("brackets"), "\(bad.error)")
        }
    }
}

// MARK: Helpers

/// Draws the lowest index every time: the first endpoint of a pair, then the second.
struct FirstChoice: RandomNumberGenerator, Sendable {
    mutating func next() -> UInt64 { 1 << 32 }
}

/// Yields, in turn, values that `Int.random(in: 0..<bound)` maps to the given indices.
struct ScriptedRandom: RandomNumberGenerator {
    var values: [UInt64]
    var position = 0

    init(_ draws: [(index: Int, bound: Int)]) {
        self.values = draws.map { draw in
            let step = UInt64.max / UInt64(draw.bound)
            return step * UInt64(draw.index) + step / 2
        }
    }

    mutating func next() -> UInt64 {
        defer { self.position = (self.position + 1) % self.values.count }
        return self.values[self.position]
    }
}

/// A clock for the balancing client that moves only when told to.
final class TestTime: Sendable {
    let base = ContinuousClock.now
    private let offset = Mutex<Duration>(.zero)

    var now: ContinuousClock.Instant { self.base + self.offset.withLock { $0 } }

    func advance(by duration: Duration) { self.offset.withLock { $0 += duration } }
}

/// Endpoints from a list the test changes.
final class ListResolver: EndpointResolver {
    private let list: Mutex<[Endpoint]>

    init(_ list: [Endpoint]) { self.list = Mutex(list) }

    func set(_ list: [Endpoint]) { self.list.withLock { $0 = list } }

    func resolve() async throws -> [Endpoint] { self.list.withLock { $0 } }
}

/// Waits, up to a bound, for `condition`; records an issue and throws when it never holds.
func eventually(
    _ what: String, within bound: Duration = .seconds(30), _ condition: @Sendable () -> Bool
) async throws {
    let deadline = ContinuousClock.now + bound
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("waited in vain until: \(what)")
            throw CancellationError()
        }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// A loopback port nothing listens on (bound, then closed).
func unusedEndpoint() async throws -> Endpoint {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .bind(host: "127.0.0.1", port: 0).get()
    let port = channel.localAddress!.port!
    try await channel.close()
    return Endpoint(host: "127.0.0.1", port: port)
}

/// Holds a model's executions until opened, and counts those that started.
final class Gate: @unchecked Sendable {
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var isOpen: Bool
    private var startedCount = 0

    init(open: Bool) { self.isOpen = open }

    /// Executions that have started, held or not.
    var started: Int {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.startedCount
    }

    /// Called by an execution: counts it, then waits while the gate is closed.
    func pass() {
        self.condition.lock()
        self.startedCount += 1
        while !self.isOpen { self.condition.wait() }
        self.condition.unlock()
    }

    func open() {
        self.condition.lock()
        self.isOpen = true
        self.condition.broadcast()
        self.condition.unlock()
    }

    func close() {
        self.condition.lock()
        self.isOpen = false
        self.condition.unlock()
    }
}

/// `X` INT32 [1] → `Y` INT32 [1], a copy, once its gate lets it through.
struct GateModel: InferenceModel {
    let gate: Gate

    var signature: ModelSignature {
        ModelSignature(
            inputs: [TensorSpec(name: "X", dataType: .int32, shape: [1])],
            outputs: [TensorSpec(name: "Y", dataType: .int32, shape: [1])],
            maxBatchSize: 0)
    }
    var isLightweight: Bool { false }

    func execute(_ inputs: [Tensor]) throws -> [Tensor] {
        self.gate.pass()
        return [Tensor(name: "Y", dataType: .int32, shape: [1], data: inputs[0].data)]
    }
}

func gateRequest() -> Inferwire_V1_InferRequest {
    inferRequest("gate", [Tensor(name: "X", values: [Int32(7)], shape: [1])])
}

/// Servers on free loopback ports, each with the example models and a `gate` model, each
/// stopped on its own.
final class Fleet: Sendable {
    struct Member: Sendable {
        let port: Int
        let server: InferWireServer
        let group: ServiceGroup
        let run: Task<Void, any Error>
        let dispatcher: RequestDispatcher
        let gate: Gate
    }

    let members: [Member]
    private let stopped = Mutex<Set<Int>>([])

    private init(members: [Member]) { self.members = members }

    var endpoints: [Endpoint] { self.members.map { Endpoint(host: "127.0.0.1", port: $0.port) } }

    /// Executions started on every server's gate.
    var gatesStarted: Int { self.members.reduce(0) { $0 + $1.gate.started } }

    static func start(_ count: Int, gatesOpen: Bool) async throws -> Fleet {
        var members: [Member] = []
        for _ in 0..<count {
            let gate = Gate(open: gatesOpen)
            var config = Inferwire_V1_ModelConfig()
            config.platform = "test"
            // More instances than calls a test holds, so held calls never queue.
            config.instances = 32
            let dispatcher = RequestDispatcher(
                registry: try makeRegistry(extraModels: [
                    LoadedModel(name: "gate", version: 1, config: config, model: GateModel(gate: gate))
                ]))
            let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
            let server = try InferWireServer(
                configuration: .init(host: "127.0.0.1", port: 0), dispatcher: dispatcher, logger: quiet,
                onListening: { continuation.yield($0.port!) })
            let group = ServiceGroup(configuration: .init(services: [server], logger: quiet))
            let run = Task { try await group.run() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw CancellationError() }
            members.append(
                Member(port: port, server: server, group: group, run: run, dispatcher: dispatcher, gate: gate))
        }
        return Fleet(members: members)
    }

    /// Shuts one server down gracefully and waits until it has stopped.
    func stop(_ index: Int) async {
        guard self.stopped.withLock({ $0.insert(index).inserted }) else { return }
        let member = self.members[index]
        await member.group.triggerGracefulShutdown()
        _ = try? await member.run.value
        member.dispatcher.stopExecution()
    }

    /// Lets every held call finish and stops every server.
    func stopAll() async {
        for member in self.members { member.gate.open() }
        for index in self.members.indices { await self.stop(index) }
    }
}

func withFleet<T: Sendable>(
    _ count: Int, gatesOpen: Bool = true, _ body: @Sendable (Fleet) async throws -> T
) async throws -> T {
    let fleet = try await Fleet.start(count, gatesOpen: gatesOpen)
    let result: Result<T, any Error>
    do { result = .success(try await body(fleet)) } catch { result = .failure(error) }
    await fleet.stopAll()
    return try result.get()
}

/// Calls the `gate` model from several tasks until stopped, counting outcomes.
final class Load: Sendable {
    let client: BalancedClient
    private let state = Mutex<(succeeded: Int, failures: [String], stopped: Bool)>((0, [], false))

    init(client: BalancedClient) { self.client = client }

    var succeeded: Int { self.state.withLock { $0.succeeded } }
    var failures: [String] { self.state.withLock { $0.failures } }
    func stop() { self.state.withLock { $0.stopped = true } }

    func run(workers: Int) async {
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<workers {
                group.addTask {
                    while !self.state.withLock({ $0.stopped }) {
                        do {
                            _ = try await self.client.infer(gateRequest())
                            self.state.withLock { $0.succeeded += 1 }
                        } catch {
                            self.state.withLock { $0.failures.append("\(error)") }
                        }
                    }
                }
            }
        }
    }
}

/// A TCP proxy to one server that can cut every connection at once (a reset to the client),
/// as a crashed server or a broken network would.
final class ChaosProxy: Sendable {
    let port: Int
    private let listener: any Channel
    private let pairs: Pairs

    final class Pairs: Sendable {
        let channels = Mutex<[(client: any Channel, server: any Channel)]>([])
    }

    private init(port: Int, listener: any Channel, pairs: Pairs) {
        self.port = port
        self.listener = listener
        self.pairs = pairs
    }

    var endpoint: Endpoint { Endpoint(host: "127.0.0.1", port: self.port) }

    static func start(forwardingTo target: Int) async throws -> ChaosProxy {
        let pairs = Pairs()
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .connect(host: "127.0.0.1", port: target)
                    .flatMap { outbound in
                        pairs.channels.withLock { $0.append((inbound, outbound)) }
                        return outbound.pipeline.addHandler(Forward(peer: inbound)).flatMap {
                            inbound.pipeline.addHandler(Forward(peer: outbound))
                        }
                    }
            }
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(host: "127.0.0.1", port: 0).get()
        return ChaosProxy(port: listener.localAddress!.port!, listener: listener, pairs: pairs)
    }

    /// Stops accepting, resets every client connection and closes every server connection.
    func kill() async throws {
        try await self.listener.close()
        for (client, server) in self.pairs.channels.withLock({ $0 }) {
            if let socket = client as? any SocketOptionProvider {
                try? await socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
            }
            try? await client.close()
            try? await server.close()
        }
    }

    /// Writes what one side reads to the other; closes the other when one closes.
    final class Forward: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let peer: any Channel

        init(peer: any Channel) { self.peer = peer }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.peer.writeAndFlush(self.unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.peer.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}

/// A server that completes the handshake and then answers every REQUEST as a script says.
final class ScriptedServer: Sendable {
    enum Reply: Sendable {
        /// ERROR UNAVAILABLE; the connection carries on.
        case unavailable
        /// The connection is reset with the request in flight.
        case reset
    }

    let port: Int
    private let listener: any Channel
    private let log: Log

    var endpoint: Endpoint { Endpoint(host: "127.0.0.1", port: self.port) }
    /// The REQUEST headers received so far.
    var requests: [FrameHeader] { self.log.headers.withLock { $0 } }

    private init(port: Int, listener: any Channel, log: Log) {
        self.port = port
        self.listener = listener
        self.log = log
    }

    static func start(_ script: @escaping @Sendable (FrameHeader) -> Reply) async throws -> ScriptedServer {
        let log = Log()
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(maxPayloadSize: 1 << 20, expectPreface: true)))
                    try channel.pipeline.syncOperations.addHandler(
                        Handler(script: { header in
                            log.headers.withLock { $0.append(header) }
                            return script(header)
                        }))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return ScriptedServer(port: listener.localAddress!.port!, listener: listener, log: log)
    }

    final class Log: Sendable {
        let headers = Mutex<[FrameHeader]>([])
    }

    func close() async {
        try? await self.listener.close()
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = InboundFrame
        typealias OutboundOut = ByteBuffer
        let script: @Sendable (FrameHeader) -> Reply

        init(script: @escaping @Sendable (FrameHeader) -> Reply) { self.script = script }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch self.unwrapInboundIn(data) {
            case .preface:
                var hello = Inferwire_V1_Hello()
                hello.version = 1
                hello.maxFrameSize = 1 << 20
                hello.maxConcurrentRequests = 64
                hello.serverName = "scripted"
                let frame = Frame.encode(
                    FrameHeader(payloadLength: 0, type: .hello), bytes: try! hello.serializedBytes() as [UInt8],
                    allocator: context.channel.allocator)
                context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
            case .frame(let frame) where frame.header.type == .request:
                switch self.script(frame.header) {
                case .unavailable:
                    let status = InferWireError(code: .unavailable, message: "scripted refusal").status
                    let answer = Frame.encode(
                        FrameHeader(
                            payloadLength: 0, type: .error, method: frame.header.method,
                            requestID: frame.header.requestID),
                        bytes: try! status.serializedBytes() as [UInt8], allocator: context.channel.allocator)
                    context.writeAndFlush(self.wrapOutboundOut(answer), promise: nil)
                case .reset:
                    let channel = context.channel
                    if let socket = channel as? any SocketOptionProvider {
                        socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in
                            channel.close(promise: nil)
                        }
                    } else {
                        channel.close(promise: nil)
                    }
                }
            default:
                break
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}

/// Runs a command to its end; its exit status, standard output and standard error.
func runCommand(_ executable: String, _ arguments: [String]) async throws -> (
    status: Int32, output: String, error: String
) {
    // Files rather than pipes: nothing has to read while it runs.
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("inferwire-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let outputURL = directory.appendingPathComponent("stdout")
    let errorURL = directory.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = try FileHandle(forWritingTo: outputURL)
    process.standardError = try FileHandle(forWritingTo: errorURL)
    let status = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
        process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
        do { try process.run() } catch { continuation.resume(throwing: error) }
    }
    return (
        status, String(decoding: try Data(contentsOf: outputURL), as: UTF8.self),
        String(decoding: try Data(contentsOf: errorURL), as: UTF8.self)
    )
}
