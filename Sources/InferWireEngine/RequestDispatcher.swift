import Foundation
public import InferWireCore
public import InferWireProto
public import Logging
import Synchronization

/// Facts a server reports about itself.
public struct ServerInfo: Sendable {
    public var name: String
    public var version: String
    public var protocolVersions: [UInt32]
    public var extensions: [String]
    /// How this server computes (BLAS library and kernel, CPU features), as key/value facts.
    public var runtime: [String: String]

    public init(
        name: String = "inferwire", version: String = InferWireVersion.current,
        protocolVersions: [UInt32] = [1], extensions: [String] = ["compression"],
        runtime: [String: String] = [:]
    ) {
        self.name = name
        self.version = version
        self.protocolVersions = protocolVersions
        self.extensions = extensions
        self.runtime = runtime
    }
}

/// Lets a transport withdraw a request whose caller gave up (CANCEL, disconnect):
/// work not yet started is skipped.
public final class RequestCancellation: Sendable {
    private let flag = Atomic<Bool>(false)

    public init() {}

    public func cancel() {
        self.flag.store(true, ordering: .relaxed)
    }

    public var isCancelled: Bool {
        self.flag.load(ordering: .relaxed)
    }
}

/// Turns request payloads into response payloads: decodes the method's message,
/// routes to a model version, validates inputs and runs the model.
///
/// Transport-free: the server hands it bytes and a deadline and gets bytes or an
/// ``InferWireError`` back through a callback.
public final class RequestDispatcher: Sendable {
    /// Methods of the inference service (the wire's `Method` enum).
    public typealias Method = Inferwire_V1_Method

    public let registry: ModelRegistry
    /// The management service; nil switches it off (its methods answer UNIMPLEMENTED).
    public let manager: ModelManager?
    public let info: ServerInfo
    /// Requests whose inputs total more than this many bytes run off the I/O thread
    /// even on a lightweight model.
    public let inlineByteLimit: Int
    /// Whether infer requests are timed from the moment they are read to their answer (the
    /// request duration metric). Status counts, queue and compute times are kept either way.
    public let timesRequests: Bool
    private let shuttingDown: Atomic<Bool>
    /// Infer requests answered before reaching a model version (undecodable, not permitted,
    /// an unknown model or version), by status code as in ``SchedulerStatistics/statusCounts``.
    private let unrouted = Mutex(StatusCounts())
    /// Spans for infer requests; nil makes none.
    public let tracing: RequestTracing?
    /// Where a sample of requests and answers is written; nil writes none.
    public let predictionLog: PredictionLog?
    /// Which infer requests are written to the access log (when the caller passes an access
    /// logger to ``handle(method:payload:deadline:cancellation:mayRunInPlace:principal:accessLogger:respond:)``).
    public let accessLogSample: OneInN

    /// - Parameters:
    ///   - registry: the models to serve.
    ///   - info: what ServerMetadata reports.
    ///   - inlineByteLimit: inputs above this size go through the version's scheduler even
    ///     for lightweight models.
    ///   - timesRequests: see ``timesRequests``.
    ///   - tracing: where request spans go; by default the tracer the process bootstrapped,
    ///     if any.
    ///   - accessLogSampleRate: the share of infer requests the access log records, 0 to 1.
    ///   - predictionLog: where a sample of requests and answers goes, if anywhere.
    public init(
        registry: ModelRegistry, manager: ModelManager? = nil, info: ServerInfo = ServerInfo(),
        inlineByteLimit: Int = 64 * 1024, timesRequests: Bool = true,
        tracing: RequestTracing? = RequestTracing.bootstrapped, accessLogSampleRate: Double = 1,
        predictionLog: PredictionLog? = nil
    ) {
        self.predictionLog = predictionLog
        self.registry = registry
        self.manager = manager
        self.info = info
        self.inlineByteLimit = inlineByteLimit
        self.timesRequests = timesRequests
        self.tracing = tracing
        self.accessLogSample = OneInN(rate: accessLogSampleRate)
        self.shuttingDown = Atomic(false)
    }

    /// Lets every model version's instance threads exit once queued work is done. Call
    /// after the server stopped.
    public func stopExecution() {
        for entry in self.registry.snapshot().models.values {
            for model in entry.versions.values { model.scheduler.shutdown() }
        }
        self.manager?.stopAll()
    }

    /// Marks the server as shutting down: ServerReady answers false from now on.
    public func beginShutdown() {
        self.shuttingDown.store(true, ordering: .relaxed)
    }

    /// Handles one request.
    ///
    /// - Parameters:
    ///   - method: the method number from the frame header.
    ///   - payload: the request message, uncompressed.
    ///   - deadline: when the caller stops waiting, if it said.
    ///   - cancellation: set when the caller gives up; work not yet started is then skipped.
    ///   - mayRunInPlace: the caller has no other request at hand to batch with this one, so a
    ///     queued model may run it on the calling thread when its instance is idle
    ///     (``ModelScheduler/runIfIdle(_:deadline:cancellation:respond:)``).
    ///   - principal: who asks; a method outside its roles, or a model outside its scope, is
    ///     answered PERMISSION_DENIED. nil: the server has no authentication, and every caller
    ///     may do everything.
    ///   - accessLogger: where a sample of infer requests (``accessLogSample``) is
    ///     logged when answered, with the connection's metadata; nil logs none.
    ///   - respond: called exactly once with the serialized response or the error; on the
    ///     calling thread when the work was cheap enough to do inline, else on an execution thread.
    public func handle(
        method: UInt16,
        payload: [UInt8],
        deadline: ContinuousClock.Instant?,
        cancellation: RequestCancellation? = nil,
        mayRunInPlace: Bool = false,
        principal: Principal? = nil,
        accessLogger: Logger? = nil,
        respond: @escaping @Sendable (Result<[UInt8], InferWireError>) -> Void
    ) {
        do {
            try Authorization.check(method: method, principal: principal)
            switch Method(rawValue: Int(method)) {
            case .serverLive?:
                _ = try Self.decode(Inferwire_V1_ServerLiveRequest.self, payload)
                var response = Inferwire_V1_ServerLiveResponse()
                response.live = true
                respond(.success(try Self.encode(response)))
            case .serverReady?:
                _ = try Self.decode(Inferwire_V1_ServerReadyRequest.self, payload)
                var response = Inferwire_V1_ServerReadyResponse()
                response.notReadyReasons = self.readinessProblems
                response.ready = response.notReadyReasons.isEmpty
                respond(.success(try Self.encode(response)))
            case .serverMetadata?:
                _ = try Self.decode(Inferwire_V1_ServerMetadataRequest.self, payload)
                var response = Inferwire_V1_ServerMetadataResponse()
                response.name = self.info.name
                response.version = self.info.version
                response.protocolVersions = self.info.protocolVersions
                response.extensions = self.info.extensions
                response.runtime = self.info.runtime
                respond(.success(try Self.encode(response)))
            case .modelReady?:
                let request = try Self.decode(Inferwire_V1_ModelReadyRequest.self, payload)
                try Authorization.check(model: request.name, principal: principal)
                var response = Inferwire_V1_ModelReadyResponse()
                if let model = try? self.registry.snapshot().resolve(
                    request.name, request.hasVersion ? request.version : nil)
                {
                    response.ready = true
                    response.version = model.version
                }
                respond(.success(try Self.encode(response)))
            case .modelMetadata?:
                let request = try Self.decode(Inferwire_V1_ModelMetadataRequest.self, payload)
                try Authorization.check(model: request.name, principal: principal)
                let snapshot = self.registry.snapshot()
                let model = try snapshot.resolve(request.name, request.hasVersion ? request.version : nil)
                respond(.success(try Self.encode(Self.metadata(of: model, in: snapshot))))
            case .infer?:
                let received: ContinuousClock.Instant? = self.timesRequests ? .now : nil
                let request = try Self.decode(Inferwire_V1_InferRequest.self, payload)
                try Authorization.check(model: request.modelName, principal: principal)
                var respond = respond
                if let accessLogger, self.accessLogSample.next() {
                    respond = Self.logged(
                        request, received: received ?? .now, principal: principal, logger: accessLogger,
                        respond: respond)
                }
                try self.infer(
                    request, received: received, deadline: deadline, cancellation: cancellation,
                    mayRunInPlace: mayRunInPlace, respond: respond)
            case .modelStatistics?:
                let request = try Self.decode(Inferwire_V1_ModelStatisticsRequest.self, payload)
                var statistics: Inferwire_V1_ModelStatisticsResponse
                if request.name.isEmpty {
                    statistics = try self.statistics(model: "")
                    if let principal { statistics.versions.removeAll { !principal.models.contains($0.name) } }
                } else {
                    try Authorization.check(model: request.name, principal: principal)
                    statistics = try self.statistics(model: request.name)
                }
                respond(.success(try Self.encode(statistics)))
            default:
                guard method >= 100 && method < 200 else {
                    throw InferWireError(code: .unimplemented, message: "method \(method) is not implemented")
                }
                guard let manager = self.manager else {
                    throw InferWireError(
                        code: .unimplemented, message: "the management service is switched off on this server")
                }
                try ManagementService(manager: manager, principal: principal).handle(
                    method: method, payload: payload, respond: respond)
            }
        } catch let error as InferWireError {
            // Errors thrown out of an infer came before any model version took the request.
            if method == UInt16(Method.infer.rawValue) { self.countUnrouted(error.code) }
            respond(.failure(error))
        } catch {
            respond(.failure(InferWireError(code: .internal, message: "\(error)", cause: error)))
        }
    }

    /// Ready: not shutting down, every model in the repository has a version serving, and
    /// no version failed to load (``readinessProblems`` is empty).
    public var isReady: Bool { self.readinessProblems.isEmpty }

    /// Wraps `respond` to write the request's access log line once it is answered.
    static func logged(
        _ request: Inferwire_V1_InferRequest, received: ContinuousClock.Instant, principal: Principal?,
        logger: Logger, respond: @escaping @Sendable (Result<[UInt8], InferWireError>) -> Void
    ) -> @Sendable (Result<[UInt8], InferWireError>) -> Void {
        var metadata: Logger.Metadata = ["model": "\(request.modelName)"]
        if request.hasVersion { metadata["version_selector"] = "\(request.version)" }
        if !request.id.isEmpty { metadata["request_id"] = "\(request.id)" }
        if let principal { metadata["principal"] = "\(principal.name)" }
        if let parent = TraceParent(request.traceparent) {
            metadata["trace_id"] = "\(parent.traceID)"
            metadata["parent_span_id"] = "\(parent.parentSpanID)"
        }
        let known = metadata
        return { result in
            var metadata = known
            metadata["code"] = "\(result.code)"
            metadata["duration_us"] = "\((ContinuousClock.now - received).inMicroseconds)"
            switch result {
            case .success(let bytes): metadata["response_bytes"] = "\(bytes.count)"
            case .failure(let error): metadata["error"] = "\(error.message)"
            }
            logger.info("infer", metadata: metadata)
            respond(result)
        }
    }

    private func countUnrouted(_ code: InferWireError.Code) {
        self.unrouted.withLock { $0.add(code) }
    }

    /// Infer requests answered before reaching a model version (undecodable, not permitted,
    /// naming an unknown model or version), by status code; codes never seen are absent.
    public var unroutedStatusCounts: [InferWireError.Code: UInt64] { self.unrouted.withLock { $0.byCode } }

    /// Why the server is not ready, one line per reason; empty when it is (``isReady``).
    public var readinessProblems: [String] {
        var problems: [String] = []
        if self.shuttingDown.load(ordering: .relaxed) { problems.append("the server is shutting down") }
        for (name, entry) in self.registry.snapshot().models.sorted(by: { $0.key < $1.key }) {
            if let failure = entry.failure {
                problems.append("model '\(name)' failed to load: \(failure)")
            } else if entry.stable == nil {
                problems.append("model '\(name)' has no version serving")
            }
            for (version, reason) in entry.failedVersions.sorted(by: { $0.key < $1.key }) {
                problems.append("model '\(name)' version \(version) failed to load: \(reason)")
            }
        }
        return problems
    }

    private func infer(
        _ request: Inferwire_V1_InferRequest,
        received: ContinuousClock.Instant?,
        deadline: ContinuousClock.Instant?,
        cancellation: RequestCancellation?,
        mayRunInPlace: Bool,
        respond: @escaping @Sendable (Result<[UInt8], InferWireError>) -> Void
    ) throws(InferWireError) {
        let (loaded, entry) = try self.registry.snapshot().route(
            request.modelName, request.hasVersion ? request.version : nil, routingKey: request.routingKey)
        var respond = respond
        var trace: RequestTrace?
        if let tracing = self.tracing {
            let started = tracing.start(
                model: loaded.name, version: loaded.version, requestID: request.id, traceparent: request.traceparent,
                tracestate: request.tracestate, at: received ?? ContinuousClock.now)
            let traced = respond
            respond = { result in
                started.finish(result, at: .now)
                traced(result)
            }
            trace = started
        }
        let prepared: PreparedRequest
        do {
            prepared = try PreparedRequest(request, for: loaded, received: received, trace: trace)
        } catch {
            loaded.scheduler.statistics.withLock { $0.recordRefusal(error.code, received: received) }
            respond(.failure(error))
            return
        }
        if let log = self.predictionLog, log.sample.next() {
            let logged = respond
            let (model, version, id, inputs) = (loaded.name, loaded.version, request.id, prepared.inputs)
            let traceID = TraceParent(request.traceparent)?.traceID
            respond = { result in
                log.offer(
                    PredictionLog.Record(
                        time: Date(), model: model, version: version, requestID: id, traceID: traceID, inputs: inputs,
                        answer: result))
                logged(result)
            }
        }

        // Shadow: mirror a share of stable's unlabelled traffic to a candidate version,
        // compare the answers, and return only stable's.
        if let tally = entry.shadow, !request.hasVersion, loaded.version == entry.stable, entry.shadowPercent > 0,
            Int.random(in: 0..<100) < entry.shadowPercent,
            let candidate = entry.versions[tally.version],
            let mirrored = try? PreparedRequest(request, for: candidate, received: received)
        {
            let pair = ShadowPair(tally: tally)
            let primary = respond
            respond = { result in
                pair.stable(result)
                primary(result)
            }
            candidate.scheduler.submit(mirrored, deadline: nil, cancellation: nil) { pair.shadow($0) }
        }

        // Cheap work runs here, on the I/O thread; the rest queues for the version's instances.
        if loaded.model.isLightweight && prepared.inputBytes <= self.inlineByteLimit && !loaded.scheduler.policy.enabled
        {
            if let refusal = ModelScheduler.refusal(
                cancellation: cancellation, deadline: deadline, now: .now, queued: false)
            {
                loaded.scheduler.statistics.withLock { $0.recordRefusal(refusal.code, received: received) }
                respond(.failure(refusal))
                return
            }
            let start = ContinuousClock.now
            let result = Result { () throws(InferWireError) -> [UInt8] in try prepared.run() }
            let end = ContinuousClock.now
            trace?.child("inferwire.compute", from: start, to: end, batchSize: prepared.rows)
            loaded.scheduler.statistics.withLock {
                $0.recordInline(
                    execution: end - start, rows: prepared.rows, code: result.code, received: received, answered: end)
            }
            respond(result)
        } else if !(mayRunInPlace
            && loaded.scheduler.runIfIdle(prepared, deadline: deadline, cancellation: cancellation, respond: respond))
        {
            loaded.scheduler.submit(prepared, deadline: deadline, cancellation: cancellation, respond: respond)
        }
    }

    /// The first version's statistics of `model`, for benchmarks in-process.
    public func statisticsForBench(model name: String) throws -> Inferwire_V1_VersionStatistics {
        guard let first = try self.statistics(model: name).versions.first else {
            throw InferWireError(code: .notFound, message: "model '\(name)' has no version")
        }
        return first
    }

    /// Requests waiting in each ready version's queue, for metrics.
    public func queueDepths() -> [(model: String, version: Int64, queued: Int)] {
        let snapshot = self.registry.snapshot()
        return snapshot.models.sorted(by: { $0.key < $1.key }).flatMap { name, entry in
            entry.readyVersions.compactMap { version in
                entry.versions[version].map { (name, version, $0.scheduler.queued) }
            }
        }
    }

    /// Counters and timings of every ready version of every model, for metrics.
    public func statisticsForExport() throws -> [Inferwire_V1_VersionStatistics] {
        try self.statistics(model: "").versions
    }

    /// Counters and timings of every version of `model` (or of every model).
    func statistics(model name: String) throws(InferWireError) -> Inferwire_V1_ModelStatisticsResponse {
        let snapshot = self.registry.snapshot()
        guard name.isEmpty || snapshot.models[name] != nil else {
            throw InferWireError(code: .notFound, message: "model '\(name)' is not in the repository")
        }
        var response = Inferwire_V1_ModelStatisticsResponse()
        for (modelName, entry) in snapshot.models.sorted(by: { $0.key < $1.key })
        where name.isEmpty || modelName == name {
            for version in entry.readyVersions {
                let loaded = entry.versions[version]!
                var statistics = loaded.scheduler.statistics.withLock { $0.message(name: modelName, version: version) }
                if let log = self.predictionLog {
                    statistics.features = log.featureStatistics(model: modelName, version: version).map(\.wire)
                }
                response.versions.append(statistics)
            }
        }
        return response
    }

    static func metadata(of model: LoadedModel, in snapshot: ModelRegistry.Snapshot)
        -> Inferwire_V1_ModelMetadataResponse
    {
        var response = Inferwire_V1_ModelMetadataResponse()
        response.name = model.name
        response.version = model.version
        response.versions = snapshot.models[model.name]?.readyVersions ?? [model.version]
        response.platform = model.config.platform
        response.inputs = model.signature.inputs.map(\.wire)
        response.outputs = model.signature.outputs.map(\.wire)
        response.maxBatchSize = Int32(model.signature.maxBatchSize)
        return response
    }

    static func decode<M: Message>(_: M.Type, _ payload: [UInt8]) throws(InferWireError) -> M {
        do {
            return try M(serializedBytes: payload)
        } catch {
            throw InferWireError(
                code: .invalidArgument, message: "payload is not a valid \(M.protoMessageName): \(error)", cause: error)
        }
    }

    static func encode(_ message: some Message) throws(InferWireError) -> [UInt8] {
        do {
            return try message.serializedBytes()
        } catch {
            throw InferWireError(
                code: .internal, message: "cannot serialize \(type(of: message).protoMessageName): \(error)",
                cause: error)
        }
    }
}

/// An infer request checked against the model's signature, ready to run.
struct PreparedRequest: Sendable {
    let model: LoadedModel
    let requestID: String
    let inputs: [Tensor]
    /// Indices into the signature's outputs, in the order to return them.
    let outputIndices: [Int]
    let inputBytes: Int
    let priority: Inferwire_V1_Priority
    /// Rows in the batch dimension (1 for models without one).
    let rows: Int
    /// When the server read the request; nil when requests are not timed.
    let received: ContinuousClock.Instant?
    /// The request's span, when requests are traced.
    let trace: RequestTrace?

    init(
        _ request: Inferwire_V1_InferRequest, for model: LoadedModel, received: ContinuousClock.Instant? = nil,
        trace: RequestTrace? = nil
    ) throws(InferWireError) {
        let signature = model.signature
        let name = model.name
        var byName: [String: Inferwire_V1_Tensor] = [:]
        for input in request.inputs {
            guard byName.updateValue(input, forKey: input.name) == nil else {
                throw InferWireError(code: .invalidArgument, message: "input '\(input.name)' is given twice")
            }
            guard signature.inputs.contains(where: { $0.name == input.name }) else {
                let expected = signature.inputs.map(\.name).joined(separator: ", ")
                throw InferWireError(
                    code: .invalidArgument,
                    message: "model '\(name)' has no input '\(input.name)' (inputs: \(expected))")
            }
        }
        var inputs: [Tensor] = []
        inputs.reserveCapacity(signature.inputs.count)
        var batch: Int?
        var bytes = 0
        for spec in signature.inputs {
            guard let wire = byName[spec.name] else {
                throw InferWireError(code: .invalidArgument, message: "model '\(name)' needs input '\(spec.name)'")
            }
            guard DataType(wire.datatype) == spec.dataType else {
                throw InferWireError(
                    code: .invalidArgument,
                    message: "input '\(spec.name)' must be \(spec.dataType.name), got \(DataType(wire.datatype).name)")
            }
            let tensor = try Tensor(wire: wire)
            guard spec.accepts(shape: tensor.shape) else {
                throw InferWireError(
                    code: .invalidArgument,
                    message:
                        "input '\(spec.name)' has shape \(tensor.shape); the model takes \(spec.shape) (-1: any size)")
            }
            if signature.maxBatchSize > 0 {
                let rows = tensor.shape[0]
                guard rows >= 1 else {
                    throw InferWireError(
                        code: .invalidArgument,
                        message: "input '\(spec.name)' has no rows; a request carries 1 to \(signature.maxBatchSize)")
                }
                guard rows <= signature.maxBatchSize else {
                    throw InferWireError(
                        code: .invalidArgument,
                        message:
                            "input '\(spec.name)' has batch size \(rows); model '\(name)' takes at most \(signature.maxBatchSize)"
                    )
                }
                if let batch, batch != rows {
                    throw InferWireError(
                        code: .invalidArgument, message: "inputs disagree on the batch size (\(batch) and \(rows))")
                }
                batch = rows
            }
            bytes += tensor.data.count
            inputs.append(tensor)
        }
        var outputIndices: [Int] = []
        if request.outputNames.isEmpty {
            outputIndices = Array(signature.outputs.indices)
        } else {
            for outputName in request.outputNames {
                guard let index = signature.outputs.firstIndex(where: { $0.name == outputName }) else {
                    let known = signature.outputs.map(\.name).joined(separator: ", ")
                    throw InferWireError(
                        code: .invalidArgument,
                        message: "model '\(name)' has no output '\(outputName)' (outputs: \(known))")
                }
                outputIndices.append(index)
            }
        }
        self.model = model
        self.requestID = request.id
        self.inputs = inputs
        self.outputIndices = outputIndices
        self.inputBytes = bytes
        self.priority = request.priority
        self.rows = batch ?? 1
        self.received = received
        self.trace = trace
    }

    /// Executes the model and serializes the response.
    func run() throws(InferWireError) -> [UInt8] {
        try self.response(outputs: try self.model.run(self.inputs))
    }

    /// The serialized response carrying this request's chosen outputs.
    func response(outputs: [Tensor]) throws(InferWireError) -> [UInt8] {
        var response = Inferwire_V1_InferResponse()
        response.modelName = self.model.name
        response.modelVersion = self.model.version
        response.id = self.requestID
        response.outputs = self.outputIndices.map { outputs[$0].wire }
        return try RequestDispatcher.encode(response)
    }
}
