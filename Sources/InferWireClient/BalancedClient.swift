import InferWireCore
package import InferWireProto
public import NIOCore
import NIOPosix
import Synchronization

/// A client for a fleet of InferWire servers: one connection (an ``InferWireClient``) per
/// server, each call sent to the server with fewer calls in flight of two drawn at random
/// (power of two choices), and calls that did not complete sent again to another server.
///
/// ```swift
/// let client = try await BalancedClient.connect(to: .dns(host: "inferwire.internal", port: 8500))
/// let result = try await client.infer(model: "fraud", inputs: inputs, timeout: .milliseconds(50))
/// await client.close()
/// ```
///
/// **Endpoints.** A fixed list (``Target/endpoints(_:)``), every address of a DNS name
/// (``Target/dns(host:port:)``, looked up again every `configuration.resolution.interval`),
/// or a resolver of your own. An endpoint that disappears from the answer takes no new calls,
/// finishes those in flight and is closed; a new one is connected.
///
/// **Connections** are opened eagerly: ``connect(to:configuration:eventLoopGroup:)`` opens one
/// to every endpoint at once and returns when each has connected or failed (it throws only
/// when none connected), and an endpoint added later is connected as it appears. Each
/// reconnects as ``InferWireClient`` does. An endpoint whose connect failed is skipped for a
/// back-off period (`configuration.backoff`) that grows with each failure in a row; when every
/// endpoint is backing off, the one whose back-off ends first is tried, so a fleet that was
/// wholly down is used again as soon as one server is back (one such probe per call).
///
/// **Retries.** A call goes to another endpoint, within its deadline and at most
/// `configuration.retries.maxAttempts` times in all, when it was never sent
/// (no connection could be opened; its connection received GOAWAY or ended before it left).
/// Inference and the read-only calls (health, metadata, statistics) are also sent again when
/// their connection ended while they were in flight, or when the server answered UNAVAILABLE
/// — which InferWire servers answer only before a call runs (a draining connection, a server
/// or model version shutting down, no ready version, the management service not running).
/// `configuration.retries.enabled` turns those off. Management calls go to one
/// endpoint and are never sent twice: a change may have been made even when no answer came.
/// A retry prefers endpoints the call has not tried; once it has tried them all, any may be
/// tried again. The deadline covers every attempt: each gets what is left of it (waiting for
/// a connection included), and none starts after it.
///
/// Health, metadata and statistics calls ask one endpoint, chosen like any other call.
public final class BalancedClient: InferWireClientProtocol, Sendable {
    /// How a balancing client connects, picks and retries.
    public struct Configuration: Sendable {
        /// Each endpoint's connection: timeouts, compression, TLS, credentials. Its
        /// `defaultTimeout` is the deadline of a call that gives none, retries included.
        public var connection: InferWireClient.Configuration
        /// Which failed calls are sent again, and how many attempts a call may make.
        public var retries: Retries
        /// How long an endpoint whose connect failed is skipped.
        public var backoff: Backoff
        /// How often, and how, a DNS name or resolver is looked up.
        public var resolution: Resolution

        /// A configuration; every part defaults to its `defaults`.
        public init(
            connection: InferWireClient.Configuration = .defaults, retries: Retries = .defaults,
            backoff: Backoff = .defaults, resolution: Resolution = .defaults
        ) {
            self.connection = connection
            self.retries = retries
            self.backoff = backoff
            self.resolution = resolution
        }

        /// The connection defaults of ``InferWireClient/Configuration/defaults``, retries on, at most
        /// one attempt more than there are endpoints, connect back-off from 1 s doubling to 30 s,
        /// names looked up again every 30 s preferring IPv4.
        public static var defaults: Configuration { Configuration() }

        /// The defaults, changed by `configure`.
        public static func defaults(configure: (inout Configuration) -> Void) -> Configuration {
            var configuration = Configuration.defaults
            configure(&configuration)
            return configuration
        }

        /// Which failed calls are sent again.
        public struct Retries: Sendable, Hashable {
            /// Whether inference and read-only calls are sent again after their connection ended
            /// while they were in flight, or after the server answered UNAVAILABLE. Calls never
            /// sent go to another endpoint either way; management calls are never sent twice.
            public var enabled: Bool
            /// The most attempts one call makes, the first included; nil: one more than the
            /// number of endpoints, so every endpoint can be tried and one of them twice.
            public var maxAttempts: Int?

            public init(enabled: Bool = true, maxAttempts: Int? = nil) {
                self.enabled = enabled
                self.maxAttempts = maxAttempts
            }

            /// Enabled, with one attempt more than there are endpoints.
            public static var defaults: Retries { Retries() }
            /// A call is sent at most once; only calls never sent go to another endpoint.
            public static var disabled: Retries { Retries(enabled: false) }
        }

        /// How long an endpoint whose connect failed is skipped: `initial` after one failure,
        /// times `multiplier` for each further failure in a row, at most `maximum`.
        public struct Backoff: Sendable, Hashable {
            /// The back-off after one failed connect.
            public var initial: Duration
            /// The longest back-off, however many connects failed in a row.
            public var maximum: Duration
            /// How much longer each further failure in a row makes it.
            public var multiplier: Double

            public init(initial: Duration = .seconds(1), maximum: Duration = .seconds(30), multiplier: Double = 2) {
                self.initial = initial
                self.maximum = maximum
                self.multiplier = multiplier
            }

            /// 1 s, doubling, at most 30 s.
            public static var defaults: Backoff { Backoff() }

            /// How long to skip an endpoint after `failures` failed connects in a row (at least 1).
            public func delay(afterFailures failures: Int) -> Duration {
                var delay = self.initial
                for _ in 1..<max(1, failures) {
                    guard delay < self.maximum else { break }
                    delay = delay * max(1, self.multiplier)
                }
                return min(delay, self.maximum)
            }
        }

        /// How a DNS name (or a resolver) is looked up.
        public struct Resolution: Sendable, Hashable {
            /// How often to look the endpoints up again; nil: only at start (and on
            /// ``BalancedClient/refreshEndpoints()``).
            public var interval: Duration?
            /// Which addresses of a name become endpoints.
            public var addressPreference: AddressPreference

            public init(interval: Duration? = .seconds(30), addressPreference: AddressPreference = .preferIPv4) {
                self.interval = interval
                self.addressPreference = addressPreference
            }

            /// Every 30 s, IPv4 addresses preferred.
            public static var defaults: Resolution { Resolution() }
        }
    }

    /// Counters of a client's calls, for tests and reports.
    public struct Statistics: Sendable, Hashable {
        /// Attempts made: one per endpoint a call was given to, connects that failed included.
        public var attempts: Int
        /// Attempts that were not a call's first.
        public var retries: Int
        /// The endpoints, in order, then those still draining after they disappeared (until closed).
        public var endpoints: [EndpointStatistics]
    }

    /// One endpoint's state and counters.
    public struct EndpointStatistics: Sendable, Hashable {
        /// Which endpoint.
        public var endpoint: Endpoint
        /// Calls in flight there now (waiting for its connection included).
        public var outstanding: Int
        /// Attempts given to it.
        public var attempts: Int
        /// Connects to it that failed.
        public var connectFailures: Int
        /// Until when it is skipped after failed connects; nil when it is not.
        public var backingOffUntil: ContinuousClock.Instant?
        /// Whether it has a connection that takes calls now (connected, no GOAWAY received).
        public var isConnectionOpen: Bool
        /// Whether it left the endpoint list and only finishes its calls in flight.
        public var isDraining: Bool
        /// Why its last connect failed.
        public var lastConnectFailure: String?
    }

    /// The configuration the client was connected with.
    public let configuration: Configuration
    /// Where the client finds its endpoints.
    public let target: Target
    private let resolver: (any EndpointResolver)?
    private let group: any EventLoopGroup
    private let now: @Sendable () -> ContinuousClock.Instant
    private let state: Mutex<State>
    private let attemptCount = Atomic<Int>(0)
    private let retryCount = Atomic<Int>(0)

    private struct State: ~Copyable {
        var active: [EndpointConnection] = []
        var draining: [EndpointConnection] = []
        var closed = false
        var random: any RandomNumberGenerator
        var refresh: Task<Void, Never>?
        var lastResolutionFailure: String?
    }

    private init(
        target: Target, configuration: Configuration, group: any EventLoopGroup,
        random: sending any RandomNumberGenerator, now: @escaping @Sendable () -> ContinuousClock.Instant
    ) {
        self.target = target
        self.configuration = configuration
        self.group = group
        self.now = now
        self.state = Mutex(State(random: random))
        switch target.kind {
        case .endpoints: self.resolver = nil
        case .dns(let host, let port):
            self.resolver = DNSResolver(
                host: host, port: port, preference: configuration.resolution.addressPreference)
        case .resolver(let resolver): self.resolver = resolver
        }
    }

    /// Finds the endpoints and connects to each (see the type's documentation).
    /// - Throws: UNAVAILABLE when the name does not resolve or no endpoint could be connected,
    ///   with every endpoint's reason; INVALID_ARGUMENT for an empty list.
    public static func connect(
        to target: Target, configuration: Configuration = .defaults,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> BalancedClient {
        try await self.connect(
            to: target, configuration: configuration, eventLoopGroup: eventLoopGroup,
            random: SystemRandomNumberGenerator(), now: { .now })
    }

    /// ``connect(to:configuration:eventLoopGroup:)`` with the random draws and the time the
    /// client judges deadlines and back-off by given by the caller (tests).
    package static func connect(
        to target: Target, configuration: Configuration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        random: some RandomNumberGenerator & Sendable, now: @escaping @Sendable () -> ContinuousClock.Instant
    ) async throws -> BalancedClient {
        if let maxAttempts = configuration.retries.maxAttempts, maxAttempts < 1 {
            throw InferWireError(code: .invalidArgument, message: "maxAttempts must be at least 1, got \(maxAttempts)")
        }
        let client = BalancedClient(
            target: target, configuration: configuration, group: eventLoopGroup, random: random, now: now)
        let endpoints: [Endpoint]
        if case .endpoints(let list) = target.kind {
            guard !list.isEmpty else {
                throw InferWireError(code: .invalidArgument, message: "no server address given")
            }
            endpoints = list
        } else {
            endpoints = try await client.resolve()
        }
        client.replaceEndpoints(with: endpoints, warm: false)
        try await client.connectAll()
        client.startRefreshing()
        return client
    }

    /// Opens a connection to every endpoint; throws when none could be opened.
    private func connectAll() async throws {
        let endpoints = self.state.withLock { $0.active }
        let failures = await withTaskGroup(of: (Int, String)?.self) { group in
            for (index, endpoint) in endpoints.enumerated() {
                group.addTask {
                    do throws(InferWireClient.AttemptFailure) {
                        _ = try await endpoint.client(within: nil)
                        return nil
                    } catch {
                        return (index, error.error.message)
                    }
                }
            }
            var failures: [(Int, String)] = []
            for await failure in group { if let failure { failures.append(failure) } }
            // In the endpoints' order, whichever failed first.
            return failures.sorted { $0.0 < $1.0 }.map(\.1)
        }
        if failures.count == endpoints.count {
            await self.close()
            throw InferWireError(
                code: .unavailable,
                message: endpoints.count == 1
                    ? failures[0]
                    : "no server could be reached (\(endpoints.count) tried): " + failures.joined(separator: "; "))
        }
    }

    // MARK: Endpoints

    /// The endpoints calls are spread over now, in order.
    public var endpoints: [Endpoint] { self.state.withLock { $0.active.map(\.endpoint) } }

    /// Why the last lookup of the endpoints failed, while it is the latest one; nil after one succeeded.
    public var lastResolutionFailure: String? { self.state.withLock { $0.lastResolutionFailure } }

    /// Looks the endpoints up now (a DNS name or resolver; a fixed list does not change):
    /// new ones are connected, those gone are drained and closed.
    /// - Throws: the lookup's error; the endpoints are then left as they were.
    public func refreshEndpoints() async throws {
        guard self.resolver != nil else { return }
        let endpoints: [Endpoint]
        do {
            endpoints = try await self.resolve()
        } catch {
            let failure = InferWireClient.wrap(error)
            self.state.withLock { $0.lastResolutionFailure = failure.message }
            throw failure
        }
        self.state.withLock { $0.lastResolutionFailure = nil }
        self.replaceEndpoints(with: endpoints, warm: true)
    }

    private func resolve() async throws -> [Endpoint] {
        guard let resolver = self.resolver else { return self.endpoints }
        var seen = Set<Endpoint>()
        let endpoints = try await resolver.resolve().filter { seen.insert($0).inserted }
        guard !endpoints.isEmpty else {
            throw InferWireError(code: .unavailable, message: "\(self.target) gave no endpoint")
        }
        return endpoints
    }

    /// Makes `endpoints` the active list: keeps those already there, adds the new (opening
    /// their connections when `warm`), and drains those gone.
    private func replaceEndpoints(with endpoints: [Endpoint], warm: Bool) {
        var connectionConfiguration = self.configuration.connection
        // Certificates name the DNS name, not the addresses it resolves to.
        if case .dns(let host, _) = self.target.kind, connectionConfiguration.tls != nil,
            connectionConfiguration.tls?.serverName == nil
        {
            connectionConfiguration.tls?.serverName = host
        }
        let (added, removed) = self.state.withLock { state -> ([EndpointConnection], [EndpointConnection]) in
            guard !state.closed else { return ([], []) }
            let existing = Dictionary(uniqueKeysWithValues: state.active.map { ($0.endpoint, $0) })
            var added: [EndpointConnection] = []
            state.active = endpoints.map { endpoint in
                if let connection = existing[endpoint] { return connection }
                let connection = EndpointConnection(
                    endpoint: endpoint, configuration: connectionConfiguration, group: self.group,
                    backoff: self.configuration.backoff, now: self.now)
                added.append(connection)
                return connection
            }
            let kept = Set(endpoints)
            let removed = existing.values.filter { !kept.contains($0.endpoint) }
            state.draining.append(contentsOf: removed)
            return (added, removed)
        }
        for connection in removed { connection.retire() }
        if warm {
            for connection in added { connection.warm() }
        }
        self.state.withLock { state in state.draining.removeAll { $0.isClosed } }
    }

    private func startRefreshing() {
        guard self.resolver != nil, let interval = self.configuration.resolution.interval, interval > .zero else {
            return
        }
        let task = Task { [weak self] in
            while !Task.isCancelled {
                do { try await Task.sleep(for: interval) } catch { return }
                guard let self else { return }
                try? await self.refreshEndpoints()
            }
        }
        self.state.withLock { state in
            if state.closed { task.cancel() } else { state.refresh = task }
        }
    }

    /// Every endpoint's client, connecting those not connected yet; endpoints backing off
    /// after a failed connect, or that cannot be connected now, are left out. For asking each
    /// server something (statistics, say).
    public func endpointClients() async -> [(endpoint: Endpoint, client: InferWireClient)] {
        let endpoints = self.state.withLock { $0.active }
        let now = self.now()
        var clients: [(endpoint: Endpoint, client: InferWireClient)] = []
        for connection in endpoints where (connection.backingOffUntil.map { $0 <= now } ?? true) {
            if let client = try? await connection.client(within: self.configuration.connection.connectTimeout) {
                clients.append((connection.endpoint, client))
            }
        }
        return clients
    }

    /// Counters of calls and endpoints.
    public var statistics: Statistics {
        let (active, draining) = self.state.withLock { state in
            state.draining.removeAll { $0.isClosed }
            return (state.active, state.draining)
        }
        return Statistics(
            attempts: self.attemptCount.load(ordering: .relaxed), retries: self.retryCount.load(ordering: .relaxed),
            endpoints: active.map { $0.statistics(draining: false) } + draining.map { $0.statistics(draining: true) })
    }

    /// Calls in flight at `endpoint` now (0 for an endpoint this client does not know).
    public func outstanding(at endpoint: Endpoint) -> Int {
        self.state.withLock { state in
            (state.active + state.draining).first { $0.endpoint == endpoint }?.outstanding.load(ordering: .relaxed)
        } ?? 0
    }

    /// Closes every connection and stops looking endpoints up; calls waiting fail UNAVAILABLE.
    public func close() async {
        let (connections, refresh) = self.state.withLock { state in
            state.closed = true
            defer {
                state.active = []
                state.draining = []
                state.refresh = nil
            }
            return (state.active + state.draining, state.refresh)
        }
        refresh?.cancel()
        for connection in connections { await connection.close() }
    }

    // MARK: Calls

    /// Picks the endpoint for a call's next attempt; `probe` when every endpoint the call may
    /// try is backing off and this one is tried anyway.
    private func pick(tried: Set<ObjectIdentifier>, now: ContinuousClock.Instant) throws(InferWireError)
        -> (connection: EndpointConnection, probe: Bool)
    {
        try self.state.withLock { state throws(InferWireError) in
            guard !state.closed else { throw InferWireError(code: .unavailable, message: "the client is closed") }
            let candidates = state.active.map {
                EndpointPicker.Candidate(
                    outstanding: $0.outstanding.load(ordering: .relaxed), backingOffUntil: $0.backingOffUntil,
                    tried: tried.contains(ObjectIdentifier($0)))
            }
            guard let index = EndpointPicker.pick(candidates, now: now, using: &state.random) else {
                throw InferWireError(code: .unavailable, message: "no server to call")
            }
            let connection = state.active[index]
            // Counted before the lock is released, so concurrent picks see it.
            connection.outstanding.add(1, ordering: .relaxed)
            return (connection, candidates[index].backingOffUntil.map { $0 > now } ?? false)
        }
    }

    /// Sends a call, to another endpoint when it fails in a way ``RetryRule`` allows, until
    /// it succeeds, its deadline passes or the attempts run out.
    package func call<Request: Message, Response: Message>(
        _ method: Inferwire_V1_Method, _ request: Request, as: Response.Type, timeout: Duration?,
        effect: RetryRule.Effect
    ) async throws -> Response {
        let bytes: [UInt8] = try request.serializedBytes()
        let timeout = timeout ?? self.configuration.connection.defaultTimeout
        let deadline = timeout.map { self.now() + $0 }
        let maxAttempts = self.configuration.retries.maxAttempts ?? (self.state.withLock { $0.active.count } + 1)
        var tried = Set<ObjectIdentifier>()
        var last: InferWireError?
        for attempt in 1...maxAttempts {
            // A cancelled caller's call is not sent again.
            if attempt > 1, Task.isCancelled {
                throw InferWireError(code: .cancelled, message: "cancelled by the caller")
            }
            let now = self.now()
            var remaining: Duration?
            if let deadline {
                remaining = deadline - now
                guard remaining! > .zero else {
                    throw InferWireError(
                        code: .deadlineExceeded,
                        message: "no answer within the deadline"
                            + (last.map { " (\(attempt - 1) attempts; the last: \($0.message))" } ?? ""))
                }
            }
            let (connection, probe) = try self.pick(tried: tried, now: now)
            tried.insert(ObjectIdentifier(connection))
            self.attemptCount.add(1, ordering: .relaxed)
            if attempt > 1 { self.retryCount.add(1, ordering: .relaxed) }
            connection.attempts.add(1, ordering: .relaxed)
            defer { connection.finished() }
            do throws(InferWireClient.AttemptFailure) {
                let client = try await connection.client(within: remaining)
                do throws(InferWireClient.AttemptFailure) {
                    let response = try await client.attempt(method, bytes, as: Response.self, timeout: remaining)
                    connection.succeeded()
                    return response
                } catch {
                    // The endpoint's client failed to reconnect.
                    if error.kind == .connectFailed { connection.connectFailed(error.error, attemptStarted: now) }
                    throw error
                }
            } catch {
                guard
                    RetryRule.mayRetry(
                        after: error.kind, effect: effect, retriesEnabled: self.configuration.retries.enabled)
                else { throw error.error }
                // Every endpoint left is backing off and the one probed failed too: one connect
                // per call while the fleet is down, not one per endpoint.
                if probe && error.kind == .connectFailed { throw error.error }
                last = error.error
            }
        }
        var error = last ?? InferWireError(code: .unavailable, message: "no server to call")
        if maxAttempts > 1 { error.message += " (gave up after \(maxAttempts) attempts)" }
        throw error
    }

    /// Sends an inference request message (the CLI's load generator builds these directly).
    package func infer(_ request: Inferwire_V1_InferRequest, timeout: Duration? = nil) async throws
        -> Inferwire_V1_InferResponse
    {
        try await self.call(.infer, request, as: Inferwire_V1_InferResponse.self, timeout: timeout, effect: .idempotent)
    }
}

/// One endpoint of a ``BalancedClient``: its client once connected, its back-off after failed
/// connects, and its calls in flight.
final class EndpointConnection: Sendable {
    let endpoint: Endpoint
    private let configuration: InferWireClient.Configuration
    private let group: any EventLoopGroup
    private let backoff: BalancedClient.Configuration.Backoff
    private let now: @Sendable () -> ContinuousClock.Instant
    /// Calls in flight; the picker reads it without a lock.
    let outstanding = Atomic<Int>(0)
    let attempts = Atomic<Int>(0)
    /// Set while a failed connect is remembered, so a success only takes the lock when there
    /// is something to forget.
    private let hasFailures = Atomic<Bool>(false)
    private let state = Mutex(State())

    private struct State {
        var client: InferWireClient?
        var connecting: EventLoopFuture<InferWireClient>?
        var failuresInARow = 0
        var connectFailures = 0
        var backingOffUntil: ContinuousClock.Instant?
        var lastConnectFailure: String?
        /// When the last failed connect was recorded.
        var lastFailureAt: ContinuousClock.Instant?
        /// Left the endpoint list: closed once nothing is in flight.
        var retired = false
        var closed = false
    }

    init(
        endpoint: Endpoint, configuration: InferWireClient.Configuration, group: any EventLoopGroup,
        backoff: BalancedClient.Configuration.Backoff, now: @escaping @Sendable () -> ContinuousClock.Instant
    ) {
        self.endpoint = endpoint
        self.configuration = configuration
        self.group = group
        self.backoff = backoff
        self.now = now
    }

    var backingOffUntil: ContinuousClock.Instant? {
        // The picker asks on every call: no lock while nothing failed.
        guard self.hasFailures.load(ordering: .relaxed) else { return nil }
        return self.state.withLock { $0.backingOffUntil }
    }
    var isClosed: Bool { self.state.withLock { $0.closed } }

    func statistics(draining: Bool) -> BalancedClient.EndpointStatistics {
        self.state.withLock { state in
            BalancedClient.EndpointStatistics(
                endpoint: self.endpoint, outstanding: self.outstanding.load(ordering: .relaxed),
                attempts: self.attempts.load(ordering: .relaxed), connectFailures: state.connectFailures,
                backingOffUntil: state.backingOffUntil, isConnectionOpen: state.client?.isConnectionOpen ?? false,
                isDraining: draining,
                lastConnectFailure: state.lastConnectFailure)
        }
    }

    /// The endpoint's client, opening its connection if there is none yet (one open, however
    /// many calls wait). Waiting counts against `timeout`.
    /// - Throws: ``InferWireClient/AttemptFailure``: `connectFailed` (recorded for back-off),
    ///   `final` when the wait outlasted `timeout`, `notSent` once the endpoint is closed.
    func client(within timeout: Duration?) async throws(InferWireClient.AttemptFailure) -> InferWireClient {
        let pending: EventLoopFuture<InferWireClient>
        switch self.clientOrPending() {
        case .client(let client): return client
        case .closed:
            throw .init(.notSent, InferWireError(code: .unavailable, message: "\(self.endpoint) was closed"))
        case .wait(let future): pending = future
        }
        do {
            return try await InferWireClient.wait(for: pending, within: timeout)
        } catch  where InferWireClient.waitExpired(error) {
            throw .init(
                .final,
                InferWireError(
                    code: .deadlineExceeded, message: "no connection to \(self.endpoint) within the deadline"))
        } catch {
            throw .init(.connectFailed, InferWireClient.wrap(error))
        }
    }

    private enum Next {
        case client(InferWireClient)
        case wait(EventLoopFuture<InferWireClient>)
        case closed
    }

    private func clientOrPending() -> Next {
        self.state.withLock { state in
            if state.closed || state.retired { return .closed }
            if let client = state.client { return .client(client) }
            if let pending = state.connecting { return .wait(pending) }
            let started = self.now()
            let pending = InferWireClient.open(
                host: self.endpoint.host, port: self.endpoint.port, configuration: self.configuration,
                eventLoopGroup: self.group)
            state.connecting = pending
            pending.whenComplete { result in self.opened(result, started: started) }
            return .wait(pending)
        }
    }

    private func opened(_ result: Result<InferWireClient, any Error>, started: ContinuousClock.Instant) {
        let orphan = self.state.withLock { state -> InferWireClient? in
            state.connecting = nil
            switch result {
            case .success(let client):
                if state.closed || state.retired { return client }
                state.client = client
                self.forgetFailures(in: &state)
                return nil
            case .failure(let error):
                self.recordFailure(InferWireClient.wrap(error), attemptStarted: started, in: &state)
                return nil
            }
        }
        if let orphan { Task { await orphan.close() } }
    }

    /// Starts connecting in the background (an endpoint added by a lookup).
    func warm() {
        _ = self.clientOrPending()
    }

    /// A connect through the endpoint's existing client failed (a reconnection), for an
    /// attempt that started at `attemptStarted`.
    func connectFailed(_ error: InferWireError, attemptStarted: ContinuousClock.Instant) {
        self.state.withLock { self.recordFailure(error, attemptStarted: attemptStarted, in: &$0) }
    }

    /// A call succeeded: failed connects before it no longer count.
    func succeeded() {
        guard self.hasFailures.load(ordering: .relaxed) else { return }
        self.state.withLock { self.forgetFailures(in: &$0) }
    }

    private func recordFailure(
        _ error: InferWireError, attemptStarted: ContinuousClock.Instant, in state: inout State
    ) {
        // Calls that waited for the same reconnection all report its failure: count it once,
        // leaving out reports from attempts that started before the last failure was recorded.
        if let last = state.lastFailureAt, attemptStarted < last { return }
        let now = self.now()
        state.lastFailureAt = now
        state.failuresInARow += 1
        state.connectFailures += 1
        state.lastConnectFailure = error.message
        state.backingOffUntil = now + self.backoff.delay(afterFailures: state.failuresInARow)
        self.hasFailures.store(true, ordering: .relaxed)
    }

    private func forgetFailures(in state: inout State) {
        state.failuresInARow = 0
        state.backingOffUntil = nil
        self.hasFailures.store(false, ordering: .relaxed)
    }

    /// One call ended here; a retired endpoint closes after its last.
    func finished() {
        let remaining = self.outstanding.subtract(1, ordering: .relaxed).newValue
        guard remaining == 0 else { return }
        if let client = self.closeIfRetired() { Task { await client.close() } }
    }

    /// Takes no new calls; closes once those in flight have ended.
    func retire() {
        self.state.withLock { $0.retired = true }
        if let client = self.closeIfRetired() { Task { await client.close() } }
    }

    /// Marks a retired endpoint with nothing in flight closed and hands back its client to
    /// close, once.
    private func closeIfRetired() -> InferWireClient? {
        self.state.withLock { state in
            guard state.retired, !state.closed, self.outstanding.load(ordering: .relaxed) == 0 else { return nil }
            state.closed = true
            defer { state.client = nil }
            return state.client
        }
    }

    func close() async {
        let client = self.state.withLock { state in
            state.closed = true
            defer { state.client = nil }
            return state.client
        }
        await client?.close()
    }
}
