public import Foundation
public import InferWireEngine
import Synchronization

/// Replicas' shared rollout state in etcd (v3, through its JSON gateway).
///
/// Keys under the prefix:
/// - `rollouts/<model>`: the model's ``PersistedRollout`` as JSON, changed only by
///   compare-and-swap on its mod revision;
/// - `replicas/<replica>`: each replica's ``ReplicaReport``, attached to the replica's lease;
/// - `guard-leader`: the replica leading the canary guard, attached to its lease.
///
/// A replica's lease lives ``Configuration/leaseSeconds`` unless renewed (every report
/// renews it), so a replica that dies stops counting and leading within that time; one that
/// stops gracefully revokes it at once (``leave()``).
public final class EtcdFleetStore: FleetStateStore {
    /// Where and how the store keeps state.
    public struct Configuration: Sendable {
        /// The etcd client endpoint.
        public var host: String
        public var port: Int
        /// Every key starts with this; replicas sharing state use the same one.
        public var prefix: String
        /// Seconds a replica's report and lead outlive its last renewal.
        public var leaseSeconds: Int
        /// How long one etcd request may take.
        public var requestTimeout: Duration

        public init(
            host: String, port: Int, prefix: String = "/inferwire", leaseSeconds: Int = 5,
            requestTimeout: Duration = .seconds(2)
        ) {
            self.host = host
            self.port = port
            self.prefix = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
            self.leaseSeconds = leaseSeconds
            self.requestTimeout = requestTimeout
        }

        /// Reads `etcd://HOST:PORT/PREFIX` (the prefix defaults to `/inferwire`).
        public init(url: String) throws(EtcdError) {
            guard let components = URLComponents(string: url), components.scheme == "etcd",
                let host = components.host, !host.isEmpty
            else {
                throw EtcdError(code: .failed, message: "not an etcd://HOST:PORT/PREFIX address: \(url)")
            }
            let path = components.path
            self.init(
                host: host, port: components.port ?? 2379, prefix: path.isEmpty || path == "/" ? "/inferwire" : path)
        }
    }

    public let configuration: Configuration
    private let client: EtcdClient
    /// This replica's lease, once granted.
    private let lease = Mutex<Int64>(0)

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.client = EtcdClient(
            configuration: .init(
                host: configuration.host, port: configuration.port, requestTimeout: configuration.requestTimeout))
    }

    /// Closes the store's connections; call once, when done with it.
    public func shutdown() async throws {
        try await self.client.shutdown()
    }

    public var location: String {
        "etcd at \(self.configuration.host):\(self.configuration.port), prefix \(self.configuration.prefix)"
    }

    private var rolloutsPrefix: String { self.configuration.prefix + "/rollouts/" }
    private var replicasPrefix: String { self.configuration.prefix + "/replicas/" }
    private var leaderKey: String { self.configuration.prefix + "/guard-leader" }

    public func load() async throws -> (rollouts: [String: SharedRollout], revision: Int64) {
        let (values, revision) = try await self.client.list(prefix: self.rolloutsPrefix)
        var rollouts: [String: SharedRollout] = [:]
        for value in values {
            if let (name, shared) = self.decode(value) { rollouts[name] = shared }
        }
        return (rollouts, revision)
    }

    public func read(model: String) async throws -> SharedRollout? {
        try await self.client.get(self.rolloutsPrefix + model).flatMap { self.decode($0)?.1 }
    }

    public func write(model: String, rollout: PersistedRollout, expectedRevision: Int64) async throws
        -> SharedRolloutWrite
    {
        let data = try JSONEncoder().encode(rollout)
        switch try await self.client.compareAndSwap(
            self.rolloutsPrefix + model, expectedModRevision: expectedRevision, value: data)
        {
        case .swapped(let revision):
            return .written(revision: revision)
        case .conflict(let current):
            return .conflict(current: current.flatMap { self.decode($0)?.1 })
        }
    }

    public func watch(from revision: Int64, _ handle: @escaping @Sendable ([String: SharedRollout]) async -> Void)
        async throws
    {
        try await self.client.watch(prefix: self.rolloutsPrefix, from: revision) { events in
            var changes: [String: SharedRollout] = [:]
            for event in events where event.kind == .put {
                if let (name, shared) = self.decode(event.keyValue) { changes[name] = shared }
            }
            if !changes.isEmpty { await handle(changes) }
        }
    }

    public func publish(_ report: ReplicaReport) async throws {
        let lease = try await self.currentLease()
        try await self.client.put(
            self.replicasPrefix + report.replica, try JSONEncoder().encode(report), lease: lease)
    }

    public func reports() async throws -> [ReplicaReport] {
        try await self.client.list(prefix: self.replicasPrefix).values.compactMap {
            try? JSONDecoder().decode(ReplicaReport.self, from: $0.value)
        }
    }

    public func leadGuard(as replica: String) async throws -> Bool {
        let lease = try await self.currentLease()
        switch try await self.client.compareAndSwap(
            self.leaderKey, expectedModRevision: 0, value: Data(replica.utf8), lease: lease)
        {
        case .swapped:
            return true
        case .conflict(let current):
            // A key left by this replica's previous lease (a restart) is not a lead: it expires.
            return current?.lease == lease && current.map { String(decoding: $0.value, as: UTF8.self) } == replica
        }
    }

    public func leave() async {
        let lease = self.lease.withLock { lease in
            defer { lease = 0 }
            return lease
        }
        if lease != 0 { try? await self.client.revokeLease(lease) }
    }

    /// The lease, renewed; a new one when there is none yet or it expired (etcd was
    /// unreachable for longer than it lives, say).
    private func currentLease() async throws -> Int64 {
        let held = self.lease.withLock { $0 }
        if held != 0, try await self.client.keepAlive(lease: held) > 0 { return held }
        let granted = try await self.client.grantLease(ttl: self.configuration.leaseSeconds)
        self.lease.withLock { $0 = granted }
        return granted
    }

    private func decode(_ value: EtcdKeyValue) -> (String, SharedRollout)? {
        guard value.key.hasPrefix(self.rolloutsPrefix),
            let rollout = try? JSONDecoder().decode(PersistedRollout.self, from: value.value)
        else { return nil }
        return (
            String(value.key.dropFirst(self.rolloutsPrefix.count)),
            SharedRollout(rollout: rollout, revision: value.modRevision)
        )
    }
}
