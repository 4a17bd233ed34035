import Dispatch
import Foundation
import Synchronization

/// A fixed set of threads that run model executions, apart from the I/O threads.
///
/// Dispatch's concurrent queues are capped at the core count on Linux, so a model that
/// blocks (or a slow one) could starve every other; this pool's width is explicit.
/// Work runs in submission order.
public final class ExecutionPool: Sendable {
    private struct State {
        var queue: [@Sendable () -> Void] = []
        var head = 0
        var stopped = false
    }

    private let state = Mutex(State())
    private let available = DispatchSemaphore(value: 0)
    public let threadCount: Int

    /// Starts `threads` worker threads.
    public init(threads: Int) {
        precondition(threads > 0, "an execution pool needs at least one thread")
        self.threadCount = threads
        for index in 0..<threads {
            let thread = Thread { [self] in self.work() }
            thread.name = "inferwire-exec-\(index)"
            thread.start()
        }
    }

    /// Queues `job` to run on a pool thread.
    public func submit(_ job: @escaping @Sendable () -> Void) {
        self.state.withLock { $0.queue.append(job) }
        self.available.signal()
    }

    /// Lets the threads exit once the queued work is done.
    public func shutdown() {
        self.state.withLock { $0.stopped = true }
        for _ in 0..<self.threadCount { self.available.signal() }
    }

    private func work() {
        while true {
            self.available.wait()
            let job: (@Sendable () -> Void)? = self.state.withLock { state in
                guard state.head < state.queue.count else { return nil }
                let job = state.queue[state.head]
                // Drop the queue's reference now: a finished job must not keep its request alive.
                state.queue[state.head] = {}
                state.head += 1
                // Compact now and then so the array does not grow forever.
                if state.head > 1024, state.head * 2 > state.queue.count {
                    state.queue.removeFirst(state.head)
                    state.head = 0
                }
                return job
            }
            if let job {
                job()
            } else if self.state.withLock({ $0.stopped }) {
                return
            }
        }
    }
}
