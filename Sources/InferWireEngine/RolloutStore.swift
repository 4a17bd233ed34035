import Dispatch
import Foundation
import InferWireCore
public import Logging
import Synchronization

/// One model's rollout as it persists across restarts, and as replicas share it (one value
/// per model in the fleet's state store).
public struct PersistedRollout: Sendable, Equatable, Codable {
    public var stable: Int64?
    public var canary: Int64?
    public var canaryPercent: Int
    public var sticky: Bool
    public var previousStable: Int64?
    public var shadow: Int64?
    public var shadowPercent: Int
    /// Promotions so far: a replica adopting a value with more schedules the old stable's
    /// grace-period unload.
    public var promotions: Int
    /// The highest version given a role by the repository poller; a replica that finds a
    /// version at or below it (a restarted one, say) leaves routing alone.
    public var newest: Int64?
    public var history: [RolloutHistoryEntry]

    public init(
        stable: Int64? = nil, canary: Int64? = nil, canaryPercent: Int = 0, sticky: Bool = false,
        previousStable: Int64? = nil, shadow: Int64? = nil, shadowPercent: Int = 0, promotions: Int = 0,
        newest: Int64? = nil, history: [RolloutHistoryEntry] = []
    ) {
        self.stable = stable
        self.canary = canary
        self.canaryPercent = canaryPercent
        self.sticky = sticky
        self.previousStable = previousStable
        self.shadow = shadow
        self.shadowPercent = shadowPercent
        self.promotions = promotions
        self.newest = newest
        self.history = history
    }

    private enum CodingKeys: String, CodingKey {
        case stable, canary, canaryPercent, sticky, previousStable, shadow, shadowPercent, promotions, newest, history
    }

    public init(from decoder: any Swift.Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.stable = try container.decodeIfPresent(Int64.self, forKey: .stable)
        self.canary = try container.decodeIfPresent(Int64.self, forKey: .canary)
        self.canaryPercent = try container.decode(Int.self, forKey: .canaryPercent)
        self.sticky = try container.decode(Bool.self, forKey: .sticky)
        self.previousStable = try container.decodeIfPresent(Int64.self, forKey: .previousStable)
        // State files written before shadows, promotions and the poller's mark were kept have none.
        self.shadow = try container.decodeIfPresent(Int64.self, forKey: .shadow)
        self.shadowPercent = try container.decodeIfPresent(Int.self, forKey: .shadowPercent) ?? 0
        self.promotions = try container.decodeIfPresent(Int.self, forKey: .promotions) ?? 0
        self.newest = try container.decodeIfPresent(Int64.self, forKey: .newest)
        self.history = try container.decode([RolloutHistoryEntry].self, forKey: .history)
    }
}

/// Every model's persisted rollout: what a ``RolloutStore`` saves and loads. Its JSON is
/// the state file's format 1.
public struct PersistedRollouts: Sendable, Equatable, Codable {
    public var format = 1
    public var models: [String: PersistedRollout]

    public init(models: [String: PersistedRollout]) {
        self.models = models
    }
}

/// Where rollout state persists between restarts.
///
/// The manager calls ``load()`` once at start and ``save(_:)`` after changes, one save at a
/// time and newest state last (it coalesces changes that arrive while a save runs).
public protocol RolloutStore: Sendable {
    /// The saved state, or nil when there is none (or none that can be read).
    func load() async -> PersistedRollouts?
    /// Saves `state`, replacing what was saved before; failures are the store's to log.
    func save(_ state: PersistedRollouts) async
}

/// Keeps rollout state in memory: for tests, and for servers that persist nothing.
public final class InMemoryRolloutStore: RolloutStore {
    private let state: Mutex<(saved: PersistedRollouts?, saves: Int)>

    public init(_ initial: PersistedRollouts? = nil) {
        self.state = Mutex((initial, 0))
    }

    /// The last state saved (or the initial one).
    public var saved: PersistedRollouts? { self.state.withLock { $0.saved } }
    /// How many saves were made.
    public var saves: Int { self.state.withLock { $0.saves } }

    public func load() async -> PersistedRollouts? { self.saved }

    public func save(_ state: PersistedRollouts) async {
        self.state.withLock { $0 = (state, $0.saves + 1) }
    }
}

/// Keeps rollout state in a JSON file, replaced atomically: a temporary file, fsync,
/// rename. The blocking I/O runs on the store's own serial queue, never on the caller's
/// thread (which may be an event loop), in the order saves were made.
///
/// A file that does not parse is moved aside to `<path>.corrupt-<unix time>`, logged, and
/// treated as absent.
public final class FileRolloutStore: RolloutStore {
    public let path: String
    private let logger: Logger
    private let queue: DispatchQueue

    public init(path: String, logger: Logger) {
        self.path = path
        self.logger = logger
        self.queue = DispatchQueue(label: "inferwire.rollout-store")
    }

    public func load() async -> PersistedRollouts? {
        await self.onQueue { self.read() }
    }

    public func save(_ state: PersistedRollouts) async {
        await self.onQueue { self.write(state) }
    }

    private func onQueue<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            self.queue.async { continuation.resume(returning: work()) }
        }
    }

    private func read() -> PersistedRollouts? {
        guard FileManager.default.fileExists(atPath: self.path) else { return nil }
        do {
            return try JSONDecoder().decode(
                PersistedRollouts.self, from: Data(contentsOf: URL(fileURLWithPath: self.path)))
        } catch {
            let aside = self.path + ".corrupt-\(Int(Date().timeIntervalSince1970))"
            try? FileManager.default.moveItem(atPath: self.path, toPath: aside)
            self.logger.error(
                "rollout state file is corrupt; starting from config defaults (file kept as \(aside))",
                metadata: ["error": "\(error)"])
            return nil
        }
    }

    private func write(_ state: PersistedRollouts) {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(state)
            let temporary = self.path + ".tmp-\(UUID().uuidString)"
            guard FileManager.default.createFile(atPath: temporary, contents: nil) else {
                throw InferWireError(code: .internal, message: "cannot create \(temporary)")
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            try handle.write(contentsOf: data)
            try handle.synchronize()
            try handle.close()
            guard rename(temporary, self.path) == 0 else {
                throw InferWireError(
                    code: .internal, message: "cannot rename \(temporary) to \(self.path): errno \(errno)")
            }
        } catch {
            self.logger.error("cannot persist rollout state", metadata: ["path": "\(self.path)", "error": "\(error)"])
        }
    }
}

/// Hands the newest state to a store, one save at a time: a state submitted while a save
/// runs replaces any older one still waiting, and whoever waits for a state returns once
/// that state or a newer one is saved.
final class SaveCoalescer: Sendable {
    private struct State {
        var latest: (number: Int, state: PersistedRollouts)?
        var submitted = 0
        var saved = 0
        var saving = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    let store: any RolloutStore
    private let state = Mutex(State())

    init(store: any RolloutStore) {
        self.store = store
    }

    /// Queues `state` as the newest (cheap; may run under the caller's lock).
    /// - Returns: its number, for ``flush(through:)``.
    func submit(_ state: PersistedRollouts) -> Int {
        self.state.withLock { s in
            s.submitted += 1
            s.latest = (s.submitted, state)
            return s.submitted
        }
    }

    /// Returns once state number `number` (or a newer one) is saved; saves it if no one else is.
    func flush(through number: Int) async {
        enum Step {
            case done
            case save(Int, PersistedRollouts)
            case wait
        }
        while true {
            let step = self.state.withLock { s -> Step in
                if s.saved >= number { return .done }
                if !s.saving, let latest = s.latest {
                    s.latest = nil
                    s.saving = true
                    return .save(latest.number, latest.state)
                }
                return .wait
            }
            switch step {
            case .done:
                return
            case .save(let saving, let state):
                await self.store.save(state)
                let waiters = self.state.withLock { s in
                    s.saved = max(s.saved, saving)
                    s.saving = false
                    defer { s.waiters = [] }
                    return s.waiters
                }
                for waiter in waiters { waiter.resume() }
            case .wait:
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let retry = self.state.withLock { s in
                        if s.saved >= number || !s.saving { return true }
                        s.waiters.append(continuation)
                        return false
                    }
                    if retry { continuation.resume() }
                }
            }
        }
    }
}
