import CoreMetrics
import Foundation
import InferWireAuth
import InferWireCore
import InferWireEngine
import InferWireONNX
import InferWireProto
import InferWireServer
import InferWireWire
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

let packageRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .path

/// `DELAY_MS` INT32 [1] → `OUT` INT32 [1]: holds an execution thread for the given
/// milliseconds, then echoes the input. It makes completion order controllable, so
/// out-of-order answers, cancellation and draining can be observed.
struct DelayModel: InferenceModel {
    /// Counts executions, when a test wants to know.
    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }
    var counter: Counter?

    var signature: ModelSignature {
        ModelSignature(
            inputs: [TensorSpec(name: "DELAY_MS", dataType: .int32, shape: [1])],
            outputs: [TensorSpec(name: "OUT", dataType: .int32, shape: [1])],
            maxBatchSize: 0)
    }
    var isLightweight: Bool { false }

    func execute(_ inputs: [Tensor]) throws -> [Tensor] {
        self.counter?.value.add(1, ordering: .relaxed)
        let ms = inputs[0].values(as: Int32.self)![0]
        Thread.sleep(forTimeInterval: Double(ms) / 1000)
        return [Tensor(name: "OUT", dataType: .int32, shape: [1], data: inputs[0].data)]
    }
}

/// A model whose every execution throws.
struct FailingModel: InferenceModel {
    var signature: ModelSignature {
        ModelSignature(
            inputs: [TensorSpec(name: "X", dataType: .fp32, shape: [-1])],
            outputs: [TensorSpec(name: "Y", dataType: .fp32, shape: [-1])],
            maxBatchSize: 0)
    }
    var isLightweight: Bool { true }

    struct Failure: Error {}
    func execute(_ inputs: [Tensor]) throws -> [Tensor] { throw Failure() }
}

/// The example repository plus the test models (and any extra ones).
func makeRegistry(extraModels: [LoadedModel] = []) throws -> ModelRegistry {
    var contents = try ModelRepository(
        directory: packageRoot + "/examples/models", loaders: ModelRepository.builtinLoaders + [OnnxModelLoader()]
    ).loadAll(logger: quiet)
    var config = Inferwire_V1_ModelConfig()
    config.platform = "test"
    // Enough instances that sleeping requests never queue behind each other.
    config.instances = 16
    contents.models.append(LoadedModel(name: "delay", version: 1, config: config, model: DelayModel()))
    contents.models.append(LoadedModel(name: "failing", version: 1, config: config, model: FailingModel()))
    contents.models += extraModels
    return ModelRegistry(contents: contents)
}

/// Runs a server on a free loopback port for the duration of `body`, then shuts it
/// down gracefully and waits for it to stop.
func withServer<T: Sendable>(
    limits: InferWireServer.Configuration.Limits = .defaults,
    extraModels: [LoadedModel] = [],
    _ body: @Sendable (_ port: Int) async throws -> T
) async throws -> T {
    try await withServer(
        dispatcher: RequestDispatcher(registry: try makeRegistry(extraModels: extraModels)), limits: limits, body)
}

/// Runs a server for `dispatcher` on a free loopback port for the duration of `body`,
/// then shuts it down gracefully, waits for it, and stops the model instances.
/// - Parameter services: run in the same service group, started before the server and
///   stopped after it.
func withServer<T: Sendable>(
    dispatcher: RequestDispatcher,
    limits: InferWireServer.Configuration.Limits = .defaults,
    tls: InferWireServer.Configuration.TLS? = nil,
    authenticator: Authenticator? = nil,
    listenerServices: InferWireServer.Configuration.Services = .all,
    port: Int = 0,
    services: [any Service] = [],
    logger: Logger = quiet,
    logsAccess: Bool = false,
    metricsFactory: (any MetricsFactory)? = nil,
    onServer: @Sendable (InferWireServer) -> Void = { _ in },
    _ body: @Sendable (_ port: Int) async throws -> T
) async throws -> T {
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    defer { dispatcher.stopExecution() }
    let server = try InferWireServer(
        configuration: .init(
            host: "127.0.0.1", port: port, limits: limits, tls: tls, services: listenerServices, logsAccess: logsAccess),
        dispatcher: dispatcher,
        logger: logger,
        authenticator: authenticator,
        onListening: { continuation.yield($0.port!) }, metricsFactory: metricsFactory)
    onServer(server)
    let group = ServiceGroup(configuration: .init(services: services + [server], logger: quiet))
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CancellationError() }
        let result: Result<T, any Error>
        do { result = .success(try await body(port)) } catch { result = .failure(error) }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
        return try result.get()
    }
}

/// A byte-level connection for sending what a well-behaved client never would.
struct RawConnection: ~Copyable {
    var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let channel: any Channel
    var received = ByteBufferAllocator().buffer(capacity: 0)

    func send(_ bytes: ByteBuffer) async throws {
        try await self.outbound.write(bytes)
    }

    func send(_ bytes: [UInt8]) async throws {
        try await self.outbound.write(ByteBuffer(bytes: bytes))
    }

    func sendPreface(_ preface: Preface = Preface()) async throws {
        var buffer = ByteBuffer()
        preface.write(to: &buffer)
        try await self.send(buffer)
    }

    /// Sends a REQUEST frame carrying `message`.
    func sendRequest(
        id: UInt32, method: Inferwire_V1_Method = .infer, _ message: some Message,
        flags: FrameFlags = [], timeoutMicros: UInt32 = 0
    ) async throws {
        let bytes: [UInt8] = try message.serializedBytes()
        try await self.send(
            Frame.encode(
                FrameHeader(
                    payloadLength: 0, type: .request, flags: flags, method: UInt16(method.rawValue), requestID: id,
                    timeoutMicros: timeoutMicros),
                bytes: bytes, allocator: ByteBufferAllocator()))
    }

    /// The next whole frame, or nil when the server closed the connection.
    mutating func readFrame() async throws -> Frame? {
        while true {
            if let header = FrameHeader.peek(from: self.received),
                self.received.readableBytes >= FrameHeader.size + Int(header.payloadLength)
            {
                self.received.moveReaderIndex(forwardBy: FrameHeader.size)
                let payload = self.received.readSlice(length: Int(header.payloadLength))!
                return Frame(header: header, payload: payload)
            }
            guard var chunk = try await self.iterator.next() else { return nil }
            self.received.writeBuffer(&chunk)
        }
    }

    /// Reads frames until one of `type` arrives (skipping HELLO and the like).
    mutating func readFrame(ofType type: FrameType) async throws -> Frame? {
        while let frame = try await self.readFrame() {
            if frame.header.type == type { return frame }
        }
        return nil
    }

    /// Everything the server sends until it closes.
    mutating func readToEnd() async throws -> [UInt8] {
        var all = [UInt8](self.received.readableBytesView)
        self.received.clear()
        while let chunk = try await self.iterator.next() { all += chunk.readableBytesView }
        return all
    }

    /// Resets the connection (SO_LINGER 0): the server sees the peer vanish at once.
    func abort() async throws {
        guard let provider = self.channel as? any SocketOptionProvider else { throw CancellationError() }
        try await provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
        try await self.channel.close()
    }

    /// Sends FIN: the server sees the end of the stream but can still answer.
    func closeOutput() async throws {
        try await self.channel.close(mode: .output)
    }
}

/// Opens a raw TCP connection to the server for the duration of `body`.
func withRawConnection<T: Sendable>(
    port: Int, _ body: (inout RawConnection) async throws -> T
) async throws -> T {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelOption(.allowRemoteHalfClosure, value: true)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    return try await channel.executeThenClose { inbound, outbound in
        var connection = RawConnection(
            iterator: inbound.makeAsyncIterator(), outbound: outbound, channel: channel.channel)
        return try await body(&connection)
    }
}

extension Frame {
    /// The `Status` of an ERROR frame.
    var status: Inferwire_V1_Status? {
        guard self.header.type == .error else { return nil }
        return try? Inferwire_V1_Status(serializedBytes: [UInt8](buffer: self.payload))
    }

    /// The `GoAway` of a GOAWAY frame.
    var goAway: Inferwire_V1_GoAway? {
        guard self.header.type == .goAway else { return nil }
        return try? Inferwire_V1_GoAway(serializedBytes: [UInt8](buffer: self.payload))
    }

    func decode<M: Message>(_: M.Type) throws -> M {
        try M(serializedBytes: [UInt8](buffer: self.payload))
    }
}

/// An infer request for `model` with the given inputs.
func inferRequest(_ model: String, _ inputs: [Tensor], version: Int64? = nil) -> Inferwire_V1_InferRequest {
    var request = Inferwire_V1_InferRequest()
    request.modelName = model
    if let version { request.version.version = version }
    request.inputs = inputs.map(\.wire)
    return request
}

func delayRequest(ms: Int32) -> Inferwire_V1_InferRequest {
    inferRequest("delay", [Tensor(name: "DELAY_MS", values: [ms], shape: [1])])
}

func addSubInputs(_ a: [Float], _ b: [Float]) -> [Tensor] {
    [
        Tensor(name: "INPUT0", values: a, shape: [a.count / 4, 4]),
        Tensor(name: "INPUT1", values: b, shape: [b.count / 4, 4]),
    ]
}

/// Log lines kept in memory with their metadata, for assertions; every logger made from it
/// keeps its own metadata, as a real handler does.
final class CapturedLog: Sendable {
    private let lines = Mutex<[(message: String, metadata: Logger.Metadata)]>([])

    var logger: Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    var entries: [(message: String, metadata: Logger.Metadata)] { self.lines.withLock { $0 } }
    var messages: [String] { self.entries.map(\.message) }

    struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { self.metadata[key] }
            set { self.metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let merged = self.metadata.merging(event.metadata ?? [:]) { _, new in new }
            self.log.lines.withLock { $0.append(("\(event.message)", merged)) }
        }
    }
}
