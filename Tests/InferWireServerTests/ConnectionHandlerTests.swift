import Foundation
import InferWireCore
import InferWireEngine
import InferWireProto
import InferWireWire
import Logging
import NIOCore
import NIOEmbedded
import SwiftProtobuf
import Testing

@testable import InferWireServer

/// Counts the reads the handler lets through to the socket.
final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var reads = 0
    func read(context: ChannelHandlerContext) {
        self.reads += 1
        context.read()
    }
}

/// The connection handler driven through an `EmbeddedChannel`: bytes in, frames out, no
/// sockets and no sleeps. Only models that answer on the calling thread are used, so every
/// answer is written before the call that caused it returns.
@Suite("Connection handler on an embedded channel")
struct ConnectionHandlerTests {
    let channel: EmbeddedChannel
    let counter = ReadCounter()
    static let handshakeTimeout = Duration.seconds(5)
    static let idleTimeout = Duration.seconds(60)

    init() throws {
        let dispatcher = RequestDispatcher(registry: try makeRegistry())
        self.channel = EmbeddedChannel()
        try self.channel.pipeline.syncOperations.addHandler(self.counter)
        try self.channel.pipeline.syncOperations.addHandler(
            ServerConnectionHandler(
                dispatcher: dispatcher,
                limits: .init(
                    maxFrameSize: 1 << 20, maxConcurrentRequests: 8, handshakeTimeout: Self.handshakeTimeout,
                    idleTimeout: Self.idleTimeout),
                logger: quiet, rejections: RateLimitedLog(logger: quiet)))
        try self.channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    /// Delivers bytes as one read of a burst, without ending the burst.
    func read(_ chunk: ByteBuffer) {
        self.channel.pipeline.syncOperations.fireChannelRead(NIOAny(chunk))
    }

    /// Delivers bytes as one read burst.
    func burst(_ chunks: ByteBuffer...) throws {
        for chunk in chunks { self.read(chunk) }
        self.channel.pipeline.syncOperations.fireChannelReadComplete()
    }

    func preface() -> ByteBuffer {
        var buffer = ByteBuffer()
        Preface().write(to: &buffer)
        return buffer
    }

    func frame(_ type: FrameType, id: UInt32 = 0, method: UInt16 = 0, _ message: (any Message)? = nil) -> ByteBuffer {
        let bytes: [UInt8] = (try? message?.serializedBytes()) ?? []
        return Frame.encode(
            FrameHeader(payloadLength: 0, type: type, method: method, requestID: id), bytes: bytes,
            allocator: ByteBufferAllocator())
    }

    func addSub(id: UInt32) -> ByteBuffer {
        self.frame(.request, id: id, method: 6, inferRequest("add_sub", addSubInputs([1, 2, 3, 4], [10, 20, 30, 40])))
    }

    /// Every frame flushed so far.
    func written() throws -> [Frame] {
        var frames: [Frame] = []
        while var buffer = try self.channel.readOutbound(as: ByteBuffer.self) {
            while let header = FrameHeader.peek(from: buffer) {
                buffer.moveReaderIndex(forwardBy: FrameHeader.size)
                let payload = buffer.readSlice(length: Int(header.payloadLength)) ?? ByteBuffer()
                frames.append(Frame(header: header, payload: payload))
            }
        }
        return frames
    }

    func open() throws {
        try self.burst(self.preface())
        #expect(try self.written().map(\.header.type) == [.hello])
    }

    @Test("the preface is answered with HELLO announcing the connection's limits")
    func hello() throws {
        try self.burst(self.preface())
        let frames = try self.written()
        #expect(frames.map(\.header.type) == [.hello])
        let hello = try Inferwire_V1_Hello(serializedBytes: [UInt8](buffer: frames[0].payload))
        #expect(hello.maxConcurrentRequests == 8)
        #expect(hello.maxFrameSize == 1 << 20)
        #expect(hello.compression)
    }

    @Test("answers written during a read burst are flushed together when it ends")
    func oneFlushPerBurst() throws {
        try self.open()
        self.read(self.addSub(id: 1))
        self.read(self.addSub(id: 2))
        // Computed, written, but not flushed before the burst ends.
        #expect(try self.written().isEmpty)
        self.channel.pipeline.syncOperations.fireChannelReadComplete()
        let frames = try self.written()
        #expect(frames.map(\.header.requestID) == [1, 2])
        #expect(frames.allSatisfy { $0.header.type == .response })
        let response = try Inferwire_V1_InferResponse(serializedBytes: [UInt8](buffer: frames[0].payload))
        #expect(try Tensor(wire: response.outputs[0]).values(as: Float.self) == [11, 22, 33, 44])
    }

    @Test("PING is echoed as PONG, and CANCEL of an unknown id is ignored")
    func pingAndCancel() throws {
        try self.open()
        var token = ByteBuffer()
        token.writeInteger(UInt64(42))
        try self.burst(
            Frame.encode(FrameHeader(payloadLength: 0, type: .ping), payload: token, allocator: ByteBufferAllocator()),
            self.frame(.cancel, id: 99))
        let frames = try self.written()
        #expect(frames.map(\.header.type) == [.pong])
        #expect(frames[0].payload.getInteger(at: frames[0].payload.readerIndex, as: UInt64.self) == 42)
        #expect(self.channel.isActive)
    }

    @Test("a reused request id ends the connection with GOAWAY naming it")
    func reusedID() throws {
        try self.open()
        // Held (not answered) while the burst lasts, so id 5 is still in flight.
        self.read(self.addSub(id: 5))
        self.read(self.addSub(id: 5))
        let frames = try self.written()
        #expect(frames.map(\.header.type) == [.goAway])
        let goAway = try Inferwire_V1_GoAway(serializedBytes: [UInt8](buffer: frames[0].payload))
        #expect(goAway.code == .invalidArgument)
        #expect(goAway.message == "request id 5 is already in flight")
        #expect(goAway.lastRequestID == 5)
        // Nothing after the GOAWAY is acted on, and the connection closes after its linger.
        self.channel.pipeline.syncOperations.fireChannelReadComplete()
        #expect(try self.written().isEmpty)
        self.channel.embeddedEventLoop.advanceTime(by: ServerConnectionHandler.lingerTime)
        #expect(!self.channel.isActive)
    }

    @Test(
        "graceful shutdown sends GOAWAY, refuses a later request with UNAVAILABLE, answers the admitted one, then closes"
    )
    func shutdown() throws {
        try self.open()
        // Request 1 is admitted and held until the burst ends; shutdown comes meanwhile.
        self.read(self.addSub(id: 1))
        self.channel.pipeline.syncOperations.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        self.read(self.addSub(id: 2))
        self.channel.pipeline.syncOperations.fireChannelReadComplete()
        let frames = try self.written()
        #expect(frames.map(\.header.type) == [.goAway, .error, .response])
        let goAway = try Inferwire_V1_GoAway(serializedBytes: [UInt8](buffer: frames[0].payload))
        #expect(goAway.lastRequestID == 1)
        #expect(goAway.code == .unavailable)
        let refusal = try Inferwire_V1_Status(serializedBytes: [UInt8](buffer: frames[1].payload))
        #expect(frames[1].header.requestID == 2)
        #expect(refusal.code == .unavailable)
        #expect(frames[2].header.requestID == 1)
        // Drained: the output is shut and the connection lingers for the peer's FIN, then closes.
        self.channel.embeddedEventLoop.advanceTime(by: ServerConnectionHandler.lingerTime)
        #expect(!self.channel.isActive)
    }

    @Test("a connection that sends no preface within the handshake timeout is closed")
    func handshakeTimeout() throws {
        self.channel.embeddedEventLoop.advanceTime(by: .nanoseconds(Self.handshakeTimeout.inNanoseconds - 1))
        #expect(self.channel.isActive)
        self.channel.embeddedEventLoop.advanceTime(by: .nanoseconds(1))
        #expect(!self.channel.isActive)
    }

    @Test("a connection past its handshake is not closed by the handshake timer")
    func handshakeDone() throws {
        try self.open()
        self.channel.embeddedEventLoop.advanceTime(by: .nanoseconds(Self.handshakeTimeout.inNanoseconds * 2))
        #expect(self.channel.isActive)
    }

    @Test(
        "a connection without requests for the idle timeout gets GOAWAY, answers requests that crossed it UNAVAILABLE, and closes; requests keep it open"
    )
    func idle() throws {
        try self.open()
        let half = TimeAmount.nanoseconds(Self.idleTimeout.inNanoseconds / 2)
        // A request in every half period keeps the connection open.
        for id in UInt32(1)...4 {
            try self.burst(self.addSub(id: id))
            #expect(try self.written().map(\.header.type) == [.response])
            self.channel.embeddedEventLoop.advanceTime(by: half)
            #expect(self.channel.isActive)
        }
        // Then one and a half idle timeouts without any: GOAWAY, and the connection closes.
        self.channel.embeddedEventLoop.advanceTime(by: half)
        self.channel.embeddedEventLoop.advanceTime(by: half)
        let frames = try self.written()
        #expect(frames.map(\.header.type) == [.goAway])
        let goAway = try Inferwire_V1_GoAway(serializedBytes: [UInt8](buffer: frames[0].payload))
        #expect(goAway.code == .unavailable)
        #expect(goAway.lastRequestID == 4)
        // A request that crossed the GOAWAY is answered UNAVAILABLE (it never runs), not lost.
        try self.burst(self.addSub(id: 5))
        let crossed = try self.written()
        #expect(crossed.map(\.header.type) == [.error])
        #expect(try Inferwire_V1_Status(serializedBytes: [UInt8](buffer: crossed[0].payload)).code == .unavailable)
        #expect(self.channel.isActive)
        // After the grace, the connection shuts down.
        self.channel.embeddedEventLoop.advanceTime(by: ServerConnectionHandler.goAwayGrace)
        self.channel.embeddedEventLoop.advanceTime(by: ServerConnectionHandler.lingerTime)
        #expect(!self.channel.isActive)
    }

    @Test(
        "the client's GOAWAY is answered with the server's; a request after it gets UNAVAILABLE, then the connection closes"
    )
    func clientGoAway() throws {
        try self.open()
        try self.burst(self.frame(.goAway), self.addSub(id: 3))
        let frames = try self.written()
        #expect(frames.map(\.header.type) == [.goAway, .error])
        let goAway = try Inferwire_V1_GoAway(serializedBytes: [UInt8](buffer: frames[0].payload))
        #expect(goAway.code == .unavailable)
        #expect(frames[1].header.requestID == 3)
        #expect(try Inferwire_V1_Status(serializedBytes: [UInt8](buffer: frames[1].payload)).code == .unavailable)
        self.channel.embeddedEventLoop.advanceTime(by: ServerConnectionHandler.lingerTime)
        #expect(!self.channel.isActive)
    }

    @Test("a connection that ends before sending any byte gets GOAWAY naming the missing preface")
    func emptyStream() throws {
        self.channel.pipeline.syncOperations.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        let frames = try self.written()
        #expect(frames.map(\.header.type) == [.goAway])
        let goAway = try Inferwire_V1_GoAway(serializedBytes: [UInt8](buffer: frames[0].payload))
        #expect(goAway.code == .invalidArgument)
        #expect(goAway.message == "stream ended before the connection preface (0 of 8 bytes)")
    }

    @Test("a batch of zero rows is INVALID_ARGUMENT: a request carries 1 to max_batch_size rows")
    func zeroRows() throws {
        try self.open()
        let empty = [
            Tensor(name: "INPUT0", values: [Float](), shape: [0, 4]),
            Tensor(name: "INPUT1", values: [Float](), shape: [0, 4]),
        ]
        try self.burst(self.frame(.request, id: 1, method: 6, inferRequest("add_sub", empty)))
        let frames = try self.written()
        #expect(frames.map(\.header.type) == [.error])
        let status = try Inferwire_V1_Status(serializedBytes: [UInt8](buffer: frames[0].payload))
        #expect(status.code == .invalidArgument)
        #expect(status.message == "input 'INPUT0' has no rows; a request carries 1 to 64")
    }

    @Test("an inverted preface range is INVALID_ARGUMENT, not a version mismatch")
    func invertedPreface() throws {
        var preface = ByteBuffer()
        Preface(minVersion: 2, maxVersion: 1).write(to: &preface)
        try self.burst(preface)
        let frames = try self.written()
        #expect(frames.map(\.header.type) == [.goAway])
        let goAway = try Inferwire_V1_GoAway(serializedBytes: [UInt8](buffer: frames[0].payload))
        #expect(goAway.code == .invalidArgument)
        #expect(goAway.message == "preface range is inverted: lowest version 2 is above highest 1")
    }

    @Test("header fields a frame type does not use are ignored, and so are CANCEL's payload and CANCEL of id 0")
    func unusedFields() throws {
        try self.open()
        var token = ByteBuffer()
        token.writeInteger(UInt64(7))
        let ping = FrameHeader(
            payloadLength: 0, type: .ping, flags: [.compressResponse], method: 9, requestID: 5, timeoutMicros: 3)
        var cancelPayload = ByteBuffer()
        cancelPayload.writeString("ignored")
        try self.burst(
            Frame.encode(ping, payload: token, allocator: ByteBufferAllocator()),
            Frame.encode(
                FrameHeader(payloadLength: 0, type: .cancel, requestID: 0), payload: cancelPayload,
                allocator: ByteBufferAllocator()),
            Frame.encode(
                FrameHeader(payloadLength: 0, type: .cancel, requestID: 42), payload: cancelPayload,
                allocator: ByteBufferAllocator()),
            self.addSub(id: 1))
        let frames = try self.written()
        #expect(frames.map(\.header.type) == [.pong, .response])
        #expect(frames[0].header.requestID == 0 && frames[0].header.method == 0)
        #expect(self.channel.isActive)
    }

    @Test("when several errors apply to a request, the one PROTOCOL.md ranks first is the answer")
    func precedence() throws {
        try self.open()
        // An unknown method with a payload that parses as nothing: UNIMPLEMENTED, not INVALID_ARGUMENT.
        try self.burst(
            Frame.encode(
                FrameHeader(payloadLength: 0, type: .request, method: 999, requestID: 1), bytes: [0xFF, 0xFF],
                allocator: ByteBufferAllocator()))
        // Over the frame limit while draining (request 3 keeps the connection open):
        // UNAVAILABLE, not RESOURCE_EXHAUSTED.
        self.read(self.addSub(id: 3))
        self.channel.pipeline.syncOperations.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        var oversized = ByteBuffer()
        FrameHeader(payloadLength: 2 << 20, type: .request, method: 6, requestID: 2).write(to: &oversized)
        self.read(oversized)
        self.channel.pipeline.syncOperations.fireChannelReadComplete()
        let frames = try self.written()
        #expect(frames.map(\.header.type) == [.error, .goAway, .error, .response])
        #expect(try Inferwire_V1_Status(serializedBytes: [UInt8](buffer: frames[0].payload)).code == .unimplemented)
        #expect(frames[2].header.requestID == 2)
        #expect(try Inferwire_V1_Status(serializedBytes: [UInt8](buffer: frames[2].payload)).code == .unavailable)
        #expect(frames[3].header.requestID == 3)
    }

    @Test("HTTP sent to the port gets a 400 that says what the port speaks")
    func http() throws {
        try self.burst(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        let response = try #require(try self.channel.readOutbound(as: ByteBuffer.self))
        let text = String(buffer: response)
        #expect(text.hasPrefix("HTTP/1.1 400 Bad Request"))
        #expect(text.contains("InferWire binary protocol"))
    }

    @Test("while the socket cannot take output the handler stops reading, and resumes when it can")
    func backpressure() throws {
        try self.open()
        let before = self.counter.reads
        self.channel.isWritable = false
        self.channel.read()
        #expect(self.counter.reads == before)
        self.channel.isWritable = true
        self.channel.pipeline.syncOperations.fireChannelWritabilityChanged()
        #expect(self.counter.reads == before + 1)
    }
}
