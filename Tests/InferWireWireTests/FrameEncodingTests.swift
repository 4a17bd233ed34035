import InferWireProto
import InferWireWire
import NIOCore
import SwiftProtobuf
import Testing

@Suite("One frame encoder and one client handshake")
struct FrameEncodingTests {
    let allocator = ByteBufferAllocator()

    @Test("a request frame carries its method, deadline and flags, with id 0 until it is sent")
    func requestFrame() throws {
        var frame = Frame.request(
            method: 6, payload: [1, 2, 3], timeout: .milliseconds(250), compression: false, allocator: self.allocator)
        let header = try #require(FrameHeader.peek(from: frame))
        #expect(header.type == .request)
        #expect(header.method == 6)
        #expect(header.requestID == 0)
        #expect(header.timeoutMicros == 250_000)
        #expect(header.flags == [])
        #expect(header.payloadLength == 3)
        Frame.setRequestID(77, in: &frame)
        #expect(FrameHeader.peek(from: frame)?.requestID == 77)
        #expect(frame.getBytes(at: FrameHeader.size, length: 3) == [1, 2, 3])
    }

    @Test("deadlines beyond the header's range are clamped, and a sub-microsecond one is not sent as none")
    func deadlines() {
        let long = Frame.request(
            method: 6, payload: [], timeout: .seconds(10_000), compression: false, allocator: self.allocator)
        #expect(FrameHeader.peek(from: long)?.timeoutMicros == UInt32.max)
        let tiny = Frame.request(
            method: 6, payload: [], timeout: .nanoseconds(10), compression: false, allocator: self.allocator)
        #expect(FrameHeader.peek(from: tiny)?.timeoutMicros == 1)
        let none = Frame.request(method: 6, payload: [], timeout: nil, compression: false, allocator: self.allocator)
        #expect(FrameHeader.peek(from: none)?.timeoutMicros == 0)
    }

    @Test("with compression, small payloads go as they are and large ones deflated, and answers are asked compressed")
    func compression() throws {
        let small = Frame.request(
            method: 6, payload: [UInt8](repeating: 7, count: 100), timeout: nil, compression: true,
            allocator: self.allocator)
        #expect(FrameHeader.peek(from: small)?.flags == [.compressResponse])
        let payload = [UInt8](repeating: 7, count: 4096)
        let large = Frame.request(
            method: 6, payload: payload, timeout: nil, compression: true, allocator: self.allocator)
        let header = try #require(FrameHeader.peek(from: large))
        #expect(header.flags == [.compressed, .compressResponse])
        #expect(Int(header.payloadLength) < payload.count)
        let body = large.getSlice(at: large.readerIndex + FrameHeader.size, length: Int(header.payloadLength))!
        let inflated = try PayloadCompression.decompress(body, limit: 1 << 20, allocator: self.allocator)
        #expect([UInt8](buffer: inflated) == payload)
        // A response encoded with compress set follows the same threshold.
        let response = Frame.encode(
            FrameHeader(payloadLength: 0, type: .response), bytes: payload, compress: true, allocator: self.allocator)
        #expect(FrameHeader.peek(from: response)?.flags == [.compressed])
    }

    func frame(_ type: FrameType, _ message: (any SwiftProtobuf.Message)? = nil, raw: [UInt8]? = nil) -> Frame {
        let bytes: [UInt8] = raw ?? ((try? message?.serializedBytes()) ?? [])
        return Frame(
            header: FrameHeader(payloadLength: UInt32(bytes.count), type: type),
            payload: self.allocator.buffer(bytes: bytes))
    }

    @Test("the client sends its preface once and the server's HELLO establishes the connection")
    func handshake() throws {
        var handshake = ClientHandshake()
        let preface = handshake.preface(allocator: self.allocator)
        #expect(preface?.getBytes(at: 0, length: 4) == Preface.magic)
        #expect(handshake.preface(allocator: self.allocator) == nil)
        #expect(handshake.receive(self.frame(.ping)) == nil)
        var hello = Inferwire_V1_Hello()
        hello.version = 1
        hello.maxConcurrentRequests = 9
        guard case .established(let received, let principal)? = handshake.receive(self.frame(.hello, hello)) else {
            Issue.record("HELLO did not establish the connection")
            return
        }
        #expect(received.maxConcurrentRequests == 9)
        #expect(principal == nil)
        #expect(handshake.isEstablished)
        // After HELLO, frames are the caller's, GOAWAY included.
        #expect(handshake.receive(self.frame(.goAway)) == nil)
    }

    @Test("with a bearer token, the AUTH frame follows the preface and the handshake waits for its answer")
    func authenticatedHandshake() throws {
        var handshake = ClientHandshake(bearerToken: "secret")
        let sentBytes = handshake.preface(allocator: self.allocator)
        var bytes = try #require(sentBytes)
        bytes.moveReaderIndex(forwardBy: Preface.size)
        let header = try #require(FrameHeader.peek(from: bytes))
        bytes.moveReaderIndex(forwardBy: FrameHeader.size)
        #expect(header.type == .auth)
        #expect(header.requestID == 0)
        let sent = try Inferwire_V1_Authenticate(serializedBytes: bytes.readBytes(length: Int(header.payloadLength))!)
        #expect(sent.bearerToken == "secret")

        var hello = Inferwire_V1_Hello()
        hello.authenticationRequired = true
        #expect(handshake.receive(self.frame(.hello, hello)) == nil)
        #expect(!handshake.isEstablished)
        var answer = Inferwire_V1_Authenticated()
        answer.principal.name = "svc"
        answer.principal.roles = ["infer"]
        guard case .established(_, let principal)? = handshake.receive(self.frame(.auth, answer)) else {
            Issue.record("the AUTH answer did not establish the connection")
            return
        }
        #expect(principal?.name == "svc")
        #expect(handshake.isEstablished)
    }

    @Test("without credentials, a server that requires them fails the handshake at HELLO")
    func credentialsMissing() {
        var handshake = ClientHandshake()
        var hello = Inferwire_V1_Hello()
        hello.authenticationRequired = true
        guard case .failed(let code, let message)? = handshake.receive(self.frame(.hello, hello)) else {
            Issue.record("HELLO requiring authentication did not fail a handshake without credentials")
            return
        }
        #expect(code == .unauthenticated)
        #expect(message.contains("requires authentication"))
        // A client certificate the server knows is enough.
        var byCertificate = ClientHandshake()
        hello.principal.name = "ci-runner"
        guard case .established(_, let principal)? = byCertificate.receive(self.frame(.hello, hello)) else {
            Issue.record("HELLO naming a principal did not establish the connection")
            return
        }
        #expect(principal?.name == "ci-runner")
    }

    @Test("a GOAWAY instead of HELLO, or an unreadable HELLO, fails the handshake with a reason")
    func refused() {
        var goAway = Inferwire_V1_GoAway()
        goAway.code = .failedPrecondition
        goAway.message = "client speaks protocol versions 2–2; this server speaks 1"
        var first = ClientHandshake()
        guard case .failed(let code, let message)? = first.receive(self.frame(.goAway, goAway)) else {
            Issue.record("GOAWAY did not fail the handshake")
            return
        }
        #expect(code == .failedPrecondition)
        #expect(message.contains("this server speaks 1"))
        var second = ClientHandshake()
        guard case .failed(let malformedCode, _)? = second.receive(self.frame(.hello, raw: [0xFF, 0xFF, 0xFF])) else {
            Issue.record("an unreadable HELLO did not fail the handshake")
            return
        }
        #expect(malformedCode == .internal)
        #expect(!second.isEstablished)
    }
}

@Suite("Compressed payloads, exactly")
struct CompressionEdgeTests {
    let allocator = ByteBufferAllocator()

    @Test("bytes after the end of the zlib stream make the payload invalid, named with their count")
    func trailingBytes() {
        var compressed = PayloadCompression.compress(ByteBuffer(repeating: 7, count: 1000), allocator: self.allocator)
        compressed.writeBytes([1, 2, 3])
        do {
            _ = try PayloadCompression.decompress(compressed, limit: 1 << 20, allocator: self.allocator)
            Issue.record("a stream with trailing bytes inflated")
        } catch {
            #expect(error.kind == .corrupt)
            #expect(error.message == "compressed payload has 3 bytes after the end of its zlib stream")
        }
    }
}
