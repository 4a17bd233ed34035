import Synchronization

/// The model manager's work that outlives the call that caused it — management operations
/// handed over by the management service, grace-period unloads, periodic polls and guard
/// checks — run as child tasks of ``run(periodic:)``, so whoever runs that (the server's
/// `ServiceGroup`) owns them: cancelling it cancels timers and waits for work under way.
final class BackgroundWork: Sendable {
    /// A unit of work, and how to turn it down when nothing runs work.
    struct Item: Sendable {
        let run: @Sendable () async -> Void
        let refuse: @Sendable () -> Void
    }

    private enum Phase {
        case idle
        case running(AsyncStream<Item>.Continuation)
        case finished
    }

    let clock: any Clock<Duration>
    private let phase = Mutex(Phase.idle)
    /// Items handed over and not yet finished or refused, and who waits for none.
    private let pending = Mutex<(count: Int, waiters: [CheckedContinuation<Void, Never>])>((0, []))

    init(clock: any Clock<Duration>) {
        self.clock = clock
    }

    /// Whether work handed over now will run.
    var isRunning: Bool {
        self.phase.withLock { if case .running = $0 { true } else { false } }
    }

    /// Hands `run` over; when nothing runs work (not started, or shut down) calls `refuse`
    /// instead, at once.
    func submit(_ run: @escaping @Sendable () async -> Void, refuse: @escaping @Sendable () -> Void) {
        self.pending.withLock { $0.count += 1 }
        let item = Item(
            run: {
                await run()
                self.finished()
            },
            refuse: {
                refuse()
                self.finished()
            })
        let continuation = self.phase.withLock { phase -> AsyncStream<Item>.Continuation? in
            if case .running(let continuation) = phase { return continuation }
            return nil
        }
        guard let continuation else { return item.refuse() }
        if case .terminated = continuation.yield(item) { item.refuse() }
    }

    /// Runs `action` after `delay` on this work's clock, unless shut down first.
    func schedule(
        after delay: Duration, refuse: @escaping @Sendable () -> Void = {},
        _ action: @escaping @Sendable () async -> Void
    ) {
        let clock = self.clock
        self.submit(
            {
                do { try await clock.sleep(for: delay) } catch { return }
                await action()
            }, refuse: refuse)
    }

    /// Runs handed-over work, and each periodic action at its interval, until the calling
    /// task is cancelled; then refuses what is still queued, cancels timers and waits for
    /// work under way (a load on its own thread runs to its end). Runs once.
    /// - Parameter loops: actions that run from start until cancelled (following a watch).
    func run(
        periodic: [(interval: Duration, action: @Sendable () async -> Void)],
        loops: [@Sendable () async -> Void] = []
    ) async {
        let (items, continuation) = AsyncStream.makeStream(of: Item.self)
        let started = self.phase.withLock { phase in
            guard case .idle = phase else { return false }
            phase = .running(continuation)
            return true
        }
        guard started else { return }
        let clock = self.clock
        await withDiscardingTaskGroup { group in
            for loop in loops { group.addTask { await loop() } }
            for (interval, action) in periodic {
                group.addTask {
                    while true {
                        do { try await clock.sleep(for: interval) } catch { return }
                        await action()
                    }
                }
            }
            await withTaskCancellationHandler {
                // Items queued before shutdown still arrive after it: refuse them.
                for await item in items {
                    if Task.isCancelled { item.refuse() } else { group.addTask { await item.run() } }
                }
            } onCancel: {
                self.finish()
            }
        }
        self.finish()
    }

    /// Returns once no handed-over work is queued or running (periodic actions aside).
    func waitUntilIdle() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = self.pending.withLock { pending in
                if pending.count == 0 { return true }
                pending.waiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    private func finished() {
        let waiters = self.pending.withLock { pending -> [CheckedContinuation<Void, Never>] in
            pending.count -= 1
            guard pending.count == 0 else { return [] }
            defer { pending.waiters = [] }
            return pending.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func finish() {
        let continuation = self.phase.withLock { phase -> AsyncStream<Item>.Continuation? in
            defer { phase = .finished }
            if case .running(let continuation) = phase { return continuation }
            return nil
        }
        continuation?.finish()
    }
}
