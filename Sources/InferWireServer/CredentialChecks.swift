import InferWireAuth
import InferWireCore

/// Checks AUTH credentials off the event loops: JWT verification is asynchronous in jwt-kit
/// and costs a signature check. Jobs run in a task group the server's `run()` owns, so
/// shutdown waits for them; after ``finish()`` new jobs are refused.
final class CredentialChecks: Sendable {
    struct Job: Sendable {
        var token: String
        var reply: @Sendable (Result<Principal, InferWireError>) -> Void
    }

    let authenticator: Authenticator
    private let jobs: AsyncStream<Job>
    private let submissions: AsyncStream<Job>.Continuation

    init(authenticator: Authenticator) {
        self.authenticator = authenticator
        (self.jobs, self.submissions) = AsyncStream.makeStream(of: Job.self)
    }

    /// Queues a check; `reply` is called once, on a task of ``run()``. Returns false (and
    /// never calls `reply`) when the server is shutting down.
    func submit(token: String, reply: @escaping @Sendable (Result<Principal, InferWireError>) -> Void) -> Bool {
        if case .enqueued = self.submissions.yield(Job(token: token, reply: reply)) { return true }
        return false
    }

    /// Runs checks until ``finish()``, then waits for those under way.
    func run() async {
        let authenticator = self.authenticator
        await withDiscardingTaskGroup { group in
            for await job in self.jobs {
                group.addTask {
                    do throws(InferWireError) {
                        job.reply(.success(try await authenticator.authenticate(bearerToken: job.token)))
                    } catch {
                        job.reply(.failure(error))
                    }
                }
            }
        }
    }

    func finish() {
        self.submissions.finish()
    }
}
