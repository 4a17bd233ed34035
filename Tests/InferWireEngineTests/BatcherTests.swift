import Dispatch
import Foundation
import InferWireCore
import InferWireEngine
import InferWireProto
import Synchronization
import Testing

/// A door executions wait at until the test opens it, and a signal for each start.
final class Gate: Sendable {
    private let closed = Atomic<Bool>(true)
    private let door = DispatchSemaphore(value: 0)
    let started = DispatchSemaphore(value: 0)

    func pass() {
        self.started.signal()
        if self.closed.load(ordering: .relaxed) {
            self.door.wait()
            self.door.signal()  // let the next one through too
        }
    }

    func open() {
        self.closed.store(false, ordering: .relaxed)
        self.door.signal()
    }

    /// Waits (bounded) until an execution has started.
    func waitForStart() -> Bool {
        self.started.wait(timeout: .now() + 10) == .success
    }
}

/// `X` FP32 [-1, -1] → `Y` = 2·X + 1 row by row; waits at an optional gate; records each
/// execution's first value and row count; fails any batch holding a negative value.
final class RowModel: InferenceModel, Sendable {
    let gate: Gate?
    let executions = Mutex<[(first: Float, rows: Int)]>([])
    /// The thread each execution ran on.
    let threads = Mutex<[pthread_t]>([])
    /// Signalled as each execution starts.
    let started = DispatchSemaphore(value: 0)
    /// An execution whose first value is 99 waits for `release`.
    let release = DispatchSemaphore(value: 0)

    init(gate: Gate? = nil) { self.gate = gate }

    var signature: ModelSignature {
        ModelSignature(
            inputs: [TensorSpec(name: "X", dataType: .fp32, shape: [-1, -1])],
            outputs: [TensorSpec(name: "Y", dataType: .fp32, shape: [-1, -1])], maxBatchSize: 16)
    }
    var isLightweight: Bool { false }

    struct Negative: Error {}

    func execute(_ inputs: [Tensor]) throws -> [Tensor] {
        self.gate?.pass()
        let x = inputs[0].values(as: Float.self)!
        self.threads.withLock { $0.append(pthread_self()) }
        self.started.signal()
        if x.first == 99 { _ = self.release.wait(timeout: .now() + 10) }
        self.executions.withLock { $0.append((x.first ?? 0, inputs[0].shape[0])) }
        if x.contains(where: { $0 < 0 }) { throw Negative() }
        return [Tensor(name: "Y", values: x.map { 2 * $0 + 1 }, shape: inputs[0].shape)]
    }
}

struct Harness {
    let dispatcher: RequestDispatcher
    let model: RowModel
    let loaded: LoadedModel

    /// - Parameter inPlaceExecutionLimit: defaults to an hour, so that whether a lone request
    ///   runs in place never depends on how fast this machine happens to be.
    init(
        batching: Bool = true, delayMicros: Int64 = 0, queueSize: Int32 = 0, instances: Int32 = 1,
        preferred: [Int32] = [],
        gate: Gate? = nil, inPlaceExecutionLimit: Duration = .seconds(3600)
    ) {
        var config = Inferwire_V1_ModelConfig()
        config.name = "rows"
        config.platform = "test"
        config.maxBatchSize = 16
        config.instances = instances
        if batching {
            config.dynamicBatching.maxQueueDelayUs = delayMicros
            config.dynamicBatching.maxQueueSize = queueSize
            config.dynamicBatching.preferredBatchSize = preferred
        }
        self.model = RowModel(gate: gate)
        self.loaded = LoadedModel(
            name: "rows", version: 1, config: config, model: self.model, inPlaceExecutionLimit: inPlaceExecutionLimit)
        self.dispatcher = RequestDispatcher(registry: ModelRegistry(contents: .init(models: [self.loaded])))
    }

    /// Sends one request and returns a handle to its answer.
    func send(
        _ rows: [[Float]], priority: Inferwire_V1_Priority = .normal, deadline: ContinuousClock.Instant? = nil,
        cancellation: RequestCancellation? = nil
    ) -> Answer {
        var request = Inferwire_V1_InferRequest()
        request.modelName = "rows"
        request.priority = priority
        request.inputs = [
            Tensor(name: "X", values: rows.flatMap { $0 }, shape: [rows.count, rows.first?.count ?? 0]).wire
        ]
        let answer = Answer()
        self.dispatcher.handle(
            method: 6, payload: try! request.serializedBytes(), deadline: deadline, cancellation: cancellation,
            mayRunInPlace: true
        ) { answer.set($0) }
        return answer
    }

    var statistics: Inferwire_V1_VersionStatistics {
        get async throws {
            let answer = Answer()
            var request = Inferwire_V1_ModelStatisticsRequest()
            request.name = "rows"
            self.dispatcher.handle(method: 7, payload: try request.serializedBytes(), deadline: nil) { answer.set($0) }
            let bytes = try await answer.value.get()
            return try Inferwire_V1_ModelStatisticsResponse(serializedBytes: bytes).versions[0]
        }
    }
}

/// One request's eventual answer.
final class Answer: Sendable {
    private let state = Mutex<
        (Result<[UInt8], InferWireError>?, CheckedContinuation<Result<[UInt8], InferWireError>, Never>?)
    >((nil, nil))

    func set(_ result: Result<[UInt8], InferWireError>) {
        let waiter = self.state.withLock { s -> CheckedContinuation<Result<[UInt8], InferWireError>, Never>? in
            s.0 = result
            defer { s.1 = nil }
            return s.1
        }
        waiter?.resume(returning: result)
    }

    var value: Result<[UInt8], InferWireError> {
        get async {
            await withCheckedContinuation { continuation in
                let ready = self.state.withLock { s -> Result<[UInt8], InferWireError>? in
                    if let r = s.0 { return r }
                    s.1 = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }

    var outputs: [Float] {
        get async throws {
            let response = try Inferwire_V1_InferResponse(serializedBytes: try await self.value.get())
            return try Tensor(wire: response.outputs[0]).values(as: Float.self)!
        }
    }

    var code: InferWireError.Code? {
        get async {
            if case .failure(let e) = await self.value { return e.code }
            return nil
        }
    }
}

@Suite("Dynamic batcher", .timeLimit(.minutes(1)))
struct BatcherTests {
    @Test("concurrent requests of random sizes each get exactly their own rows, and batches really form")
    func property() async throws {
        let gate = Gate()
        let harness = Harness(gate: gate)
        defer { harness.dispatcher.stopExecution() }
        // Hold the instance so that requests pile up, then let everything through.
        let first = harness.send([[0.5, 0.5]])
        #expect(gate.waitForStart())
        var generator = SystemRandomNumberGenerator()
        var expected: [(Answer, [Float])] = []
        for _ in 0..<200 {
            let rows = Int.random(in: 1...5, using: &generator)
            let values = (0..<(rows * 2)).map { _ in Float.random(in: 0...100, using: &generator) }
            expected.append(
                (harness.send(stride(from: 0, to: values.count, by: 2).map { Array(values[$0..<($0 + 2)]) }), values))
        }
        gate.open()
        #expect(try await first.outputs == [2, 2])
        for (answer, values) in expected {
            #expect(try await answer.outputs == values.map { 2 * $0 + 1 })
        }
        let stats = try await harness.statistics
        #expect(stats.requestCount == 201)
        #expect(stats.executionCount < 201)
        #expect(stats.batchSizeCounts.keys.contains { $0 > 5 })
        #expect(stats.batchSizeCounts.keys.allSatisfy { $0 <= 16 })
    }

    @Test("batching on and off give the same outputs")
    func onOff() async throws {
        let on = Harness(batching: true, instances: 1)
        let off = Harness(batching: false, instances: 1)
        defer {
            on.dispatcher.stopExecution()
            off.dispatcher.stopExecution()
        }
        let inputs = (0..<50).map { i in [[Float(i), Float(i) / 3]] }
        let a = inputs.map { on.send($0) }
        let b = inputs.map { off.send($0) }
        for (x, y) in zip(a, b) { #expect(try await x.outputs == y.outputs) }
    }

    @Test("a full queue refuses at once with RESOURCE_EXHAUSTED")
    func queueLimit() async throws {
        let gate = Gate()
        let harness = Harness(queueSize: 2, gate: gate)
        defer { harness.dispatcher.stopExecution() }
        let running = harness.send([[1, 1]])
        #expect(gate.waitForStart())
        let queued = [harness.send([[2, 2]]), harness.send([[3, 3]])]
        let refused = harness.send([[4, 4]])
        #expect(await refused.code == .resourceExhausted)
        gate.open()
        #expect(try await running.outputs == [3, 3])
        for answer in queued { #expect(await answer.code == nil) }
    }

    @Test("a request whose deadline passes in the queue is answered DEADLINE_EXCEEDED and never executed")
    func deadline() async throws {
        let gate = Gate()
        let harness = Harness(gate: gate)
        defer { harness.dispatcher.stopExecution() }
        let running = harness.send([[1, 1]])
        #expect(gate.waitForStart())
        let expired = harness.send([[7, 7]], deadline: .now)
        gate.open()
        #expect(await expired.code == .deadlineExceeded)
        _ = try await running.outputs
        #expect(harness.model.executions.withLock { $0.map(\.first) }.contains(7) == false)
    }

    @Test("a cancelled request leaves the queue without executing")
    func cancellation() async throws {
        let gate = Gate()
        let harness = Harness(gate: gate)
        defer { harness.dispatcher.stopExecution() }
        let running = harness.send([[1, 1]])
        #expect(gate.waitForStart())
        let token = RequestCancellation()
        let cancelled = harness.send([[9, 9]], cancellation: token)
        token.cancel()
        gate.open()
        #expect(await cancelled.code == .cancelled)
        _ = try await running.outputs
        #expect(harness.model.executions.withLock { $0.map(\.first) }.contains(9) == false)
    }

    @Test("HIGH priority requests are served before NORMAL ones queued earlier")
    func priority() async throws {
        let gate = Gate()
        let harness = Harness(batching: false, gate: gate)
        defer { harness.dispatcher.stopExecution() }
        let running = harness.send([[0, 0]])
        #expect(gate.waitForStart())
        let normal = (1...3).map { harness.send([[Float($0), 0]]) }
        let high = harness.send([[100, 0]], priority: .high)
        gate.open()
        _ = try await running.outputs
        for answer in normal + [high] { _ = try await answer.outputs }
        #expect(harness.model.executions.withLock { $0.map(\.first) } == [0, 100, 1, 2, 3])
    }

    @Test("requests with different inner shapes are not merged")
    func mixedShapes() async throws {
        let gate = Gate()
        let harness = Harness(gate: gate)
        defer { harness.dispatcher.stopExecution() }
        let running = harness.send([[1, 1]])
        #expect(gate.waitForStart())
        let narrow = [harness.send([[1, 2]]), harness.send([[3, 4]])]
        let wide = [harness.send([[1, 2, 3]]), harness.send([[4, 5, 6]])]
        gate.open()
        _ = try await running.outputs
        #expect(try await narrow[1].outputs == [7, 9])
        #expect(try await wide[1].outputs == [9, 11, 13])
        // One execution for the blocker, one per shape.
        #expect(harness.model.executions.withLock { $0.map(\.rows) } == [1, 2, 2])
    }

    @Test("a failed batch is retried request by request: only the request whose own inputs fail gets the error")
    func failingBatch() async throws {
        let gate = Gate()
        let harness = Harness(gate: gate)
        defer { harness.dispatcher.stopExecution() }
        let running = harness.send([[1, 1]])
        #expect(gate.waitForStart())
        let batch = [harness.send([[2, 2]]), harness.send([[-1, 3]]), harness.send([[4, 4]])]
        gate.open()
        #expect(try await running.outputs == [3, 3])
        #expect(try await batch[0].outputs == [5, 5])
        #expect(await batch[1].code == .internal)
        #expect(try await batch[2].outputs == [9, 9])
        // The blocker, the merged attempt, then each request alone.
        #expect(harness.model.executions.withLock { $0.map(\.rows) } == [1, 3, 1, 1, 1])
        #expect(try await harness.send([[5, 5]]).outputs == [11, 11])
        let stats = try await harness.statistics
        #expect(stats.failureCount == 1)
    }

    @Test("with a queue delay, requests arriving close together share one execution")
    func queueDelay() async throws {
        let harness = Harness(delayMicros: 200_000)
        defer { harness.dispatcher.stopExecution() }
        let answers = (0..<4).map { harness.send([[Float($0), 0]]) }
        for answer in answers { _ = try await answer.outputs }
        #expect(harness.model.executions.withLock { $0.map(\.rows) } == [4])
    }

    @Test("a preferred batch size is taken as soon as enough rows are queued; the rest wait out the delay")
    func preferredSize() async throws {
        let gate = Gate()
        let harness = Harness(delayMicros: 100_000, preferred: [4], gate: gate)
        defer { harness.dispatcher.stopExecution() }
        // The first request waits its delay alone (1 row < 4), then holds the instance at the gate.
        let running = harness.send([[0, 0]])
        #expect(gate.waitForStart())
        let queued = (1...6).map { harness.send([[Float($0), 0]]) }
        gate.open()
        _ = try await running.outputs
        for answer in queued { _ = try await answer.outputs }
        #expect(harness.model.executions.withLock { $0.map(\.rows) } == [1, 4, 2])
    }

    @Test("several instances of one version run batches concurrently")
    func instances() async throws {
        let gate = Gate()
        let harness = Harness(batching: false, instances: 2, gate: gate)
        defer { harness.dispatcher.stopExecution() }
        let first = harness.send([[1, 1]])
        let second = harness.send([[2, 2]])
        // Both are inside the model at once: the second instance did not wait for the first.
        #expect(gate.waitForStart())
        #expect(gate.waitForStart())
        gate.open()
        #expect(try await first.outputs == [3, 3])
        #expect(try await second.outputs == [5, 5])
    }

    @Test("without a queue delay a lone request runs at once, alone")
    func loneRequest() async throws {
        let harness = Harness()
        defer { harness.dispatcher.stopExecution() }
        #expect(try await harness.send([[1, 2]]).outputs == [3, 5])
        #expect(harness.model.executions.withLock { $0.map(\.rows) } == [1])
    }

    @Test("once a version's single-row runs are known to be short, a lone request runs on the caller's thread")
    func inPlace() async throws {
        let harness = Harness()
        defer { harness.dispatcher.stopExecution() }
        // The first runs go through the instance thread and measure the model.
        for i in 0..<8 {
            let caller = pthread_self()
            let answer = harness.send([[Float(i), 1]])
            #expect(try await answer.outputs == [Float(2 * i + 1), 3])
            #expect(harness.model.threads.withLock { $0.last.map { pthread_equal($0, caller) } } == 0)
        }
        let caller = pthread_self()
        let answer = harness.send([[5, 5]])
        #expect(harness.model.threads.withLock { $0.last.map { pthread_equal($0, caller) } } != 0)
        #expect(try await answer.outputs == [11, 11])
        // Counted like any execution.
        #expect(try await harness.statistics.executionCount == 9)
    }

    @Test("a version whose single-row runs are not short enough never runs a request in place")
    func notInPlaceWhenSlow() async throws {
        // No run is shorter than zero: every request goes through the instance thread.
        let harness = Harness(inPlaceExecutionLimit: .zero)
        defer { harness.dispatcher.stopExecution() }
        for i in 0..<12 {
            let caller = pthread_self()
            _ = try await harness.send([[Float(i), 1]]).outputs
            #expect(harness.model.threads.withLock { $0.last.map { pthread_equal($0, caller) } } == 0)
        }
    }

    @Test("with a queue delay requests never run in place")
    func notInPlaceWithDelay() async throws {
        let harness = Harness(delayMicros: 200)
        defer { harness.dispatcher.stopExecution() }
        for i in 0..<12 {
            let caller = pthread_self()
            let answer = harness.send([[Float(i), 1]])
            _ = try await answer.outputs
            #expect(harness.model.threads.withLock { $0.last.map { pthread_equal($0, caller) } } == 0)
        }
    }

    @Test("a request running in place takes the instance's place: a queued one waits for it")
    func inPlaceTakesTheInstance() async throws {
        let harness = Harness()
        defer { harness.dispatcher.stopExecution() }
        for i in 0..<8 {
            _ = try await harness.send([[Float(i), 1]]).outputs
            #expect(harness.model.started.wait(timeout: .now() + 10) == .success)
        }
        // Another thread's request runs in place and is held there.
        let holding = Mutex<Answer?>(nil)
        let sender = Thread { holding.withLock { $0 = harness.send([[99, 1]]) } }
        sender.start()
        #expect(harness.model.started.wait(timeout: .now() + 10) == .success)
        let waiting = harness.send([[3, 3]])
        // The one instance is taken, so the queued request must not start beside the held one
        // (bounded wait for something that must not happen).
        #expect(harness.model.started.wait(timeout: .now() + .milliseconds(200)) == .timedOut)
        harness.model.release.signal()
        #expect(try await waiting.outputs == [7, 7])
        while holding.withLock({ $0 }) == nil { await Task.yield() }
        #expect(try await holding.withLock { $0! }.outputs == [199, 3])
    }

    @Test("a request already cancelled or expired is answered at once, without taking the instance")
    func cancelledInPlace() async throws {
        let harness = Harness()
        defer { harness.dispatcher.stopExecution() }
        for i in 0..<8 { _ = try await harness.send([[Float(i), 1]]).outputs }
        let cancellation = RequestCancellation()
        cancellation.cancel()
        #expect(await harness.send([[1, 1]], cancellation: cancellation).code == .cancelled)
        #expect(await harness.send([[1, 1]], deadline: .now - .seconds(1)).code == .deadlineExceeded)
        // The instance is free for the next request, which runs.
        #expect(try await harness.send([[2, 2]]).outputs == [5, 5])
        #expect(harness.model.executions.withLock { $0.count } == 9)
    }
}
