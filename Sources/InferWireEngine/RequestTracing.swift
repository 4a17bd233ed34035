import InferWireCore
public import Tracing

/// Spans for infer requests, through swift-distributed-tracing: `inferwire.infer` (a server
/// span from reading the request to its answer) with `inferwire.queue` and
/// `inferwire.compute` children. A request's W3C `traceparent` becomes the parent through
/// the tracer's own propagation (`extract`), so the spans join the caller's trace.
public struct RequestTracing: Sendable {
    public let tracer: any Tracer

    public init(tracer: any Tracer) {
        self.tracer = tracer
    }

    /// The tracer the process bootstrapped (`InstrumentationSystem.bootstrap`, e.g. with
    /// swift-otel); nil when none was, and requests then make no spans and pay nothing.
    public static var bootstrapped: RequestTracing? {
        let tracer = InstrumentationSystem.tracer
        return tracer is NoOpTracer ? nil : RequestTracing(tracer: tracer)
    }

    /// Starts the request's span, a child of the caller's trace context when it sent one.
    func start(
        model: String, version: Int64, requestID: String, traceparent: String, tracestate: String,
        at received: ContinuousClock.Instant
    ) -> RequestTrace {
        var context = ServiceContext.topLevel
        if !traceparent.isEmpty {
            var carrier = ["traceparent": traceparent]
            if !tracestate.isEmpty { carrier["tracestate"] = tracestate }
            self.tracer.extract(carrier, into: &context, using: CarrierExtractor())
        }
        let span = self.tracer.startSpan(
            "inferwire.infer", context: context, ofKind: .server, at: TraceTime.timestamp(received))
        span.attributes["inferwire.model"] = model
        span.attributes["inferwire.model_version"] = Int(version)
        if !requestID.isEmpty { span.attributes["inferwire.request_id"] = requestID }
        return RequestTrace(tracer: self.tracer, span: span)
    }

    struct CarrierExtractor: Extractor {
        func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
    }
}

/// One request's open span, carried with the request through the queue.
final class RequestTrace: Sendable {
    let tracer: any Tracer
    let span: any Span

    init(tracer: any Tracer, span: any Span) {
        self.tracer = tracer
        self.span = span
    }

    /// Records a finished child span (queue wait, computation) with its real start and end.
    func child(
        _ name: String, from start: ContinuousClock.Instant, to end: ContinuousClock.Instant, batchSize: Int? = nil
    ) {
        let child = self.tracer.startSpan(name, context: self.span.context, at: TraceTime.timestamp(start))
        if let batchSize { child.attributes["inferwire.batch_size"] = batchSize }
        child.end(at: TraceTime.timestamp(end))
    }

    /// Ends the request's span with its outcome.
    func finish(_ result: Result<[UInt8], InferWireError>, at end: ContinuousClock.Instant) {
        self.span.attributes["inferwire.status_code"] = "\(result.code)"
        if case .failure(let error) = result { self.span.setStatus(SpanStatus(code: .error, message: error.message)) }
        self.span.end(at: TraceTime.timestamp(end))
    }
}

/// Monotonic instants as the wall-clock timestamps tracers take, through one anchor taken
/// at first use, so spans keep the order and durations the monotonic clock measured.
enum TraceTime {
    static let anchor = (monotonic: ContinuousClock.now, wall: DefaultTracerClock.now.nanosecondsSinceEpoch)

    static func timestamp(_ instant: ContinuousClock.Instant) -> DefaultTracerClock.Timestamp {
        let offset = (instant - self.anchor.monotonic).inNanoseconds
        let wall = Int64(clamping: self.anchor.wall) &+ Int64(clamping: offset)
        return DefaultTracerClock.Timestamp(nanosecondsSinceEpoch: UInt64(max(0, wall)))
    }
}
