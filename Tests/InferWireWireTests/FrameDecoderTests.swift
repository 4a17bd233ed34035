import InferWireWire
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@Suite("Frame decoder")
struct FrameDecoderTests {
    let allocator = ByteBufferAllocator()

    func frameBytes(_ header: FrameHeader, _ payload: String) -> ByteBuffer {
        Frame.encode(header, payload: self.allocator.buffer(string: payload), allocator: self.allocator)
    }

    func prefaceBytes(_ preface: Preface = Preface()) -> ByteBuffer {
        var buffer = self.allocator.buffer(capacity: 8)
        preface.write(to: &buffer)
        return buffer
    }

    @Test("decodes frames however the bytes are split")
    func verifier() throws {
        let request = FrameHeader(
            payloadLength: 5, type: .request, flags: .compressResponse, method: 6, requestID: 7, timeoutMicros: 1000)
        let ping = FrameHeader(payloadLength: 0, type: .ping)
        var input = self.frameBytes(request, "hello")
        var second = self.frameBytes(ping, "")
        input.writeBuffer(&second)
        // The verifier replays inputs through one decoder, so the once-only preface is tested below.
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: [
                (
                    input,
                    [
                        .frame(Frame(header: request, payload: self.allocator.buffer(string: "hello"))),
                        .frame(Frame(header: ping, payload: self.allocator.buffer(capacity: 0))),
                    ]
                )
            ],
            decoderFactory: { FrameDecoder(maxPayloadSize: 1024, expectPreface: false) })
    }

    @Test("decodes the preface and then frames when fed one byte at a time")
    func prefaceByteByByte() throws {
        let channel = EmbeddedChannel(
            handler: ByteToMessageHandler(FrameDecoder(maxPayloadSize: 1024, expectPreface: true)))
        let request = FrameHeader(payloadLength: 2, type: .request, method: 6, requestID: 9)
        var input = self.prefaceBytes(Preface(minVersion: 1, maxVersion: 3))
        var frame = self.frameBytes(request, "hi")
        input.writeBuffer(&frame)
        var outputs: [InboundFrame] = []
        while let byte = input.readSlice(length: 1) {
            try channel.writeInbound(byte)
            while let out = try channel.readInbound(as: InboundFrame.self) { outputs.append(out) }
        }
        #expect(
            outputs == [
                .preface(Preface(minVersion: 1, maxVersion: 3)),
                .frame(Frame(header: request, payload: self.allocator.buffer(string: "hi"))),
            ])
        #expect(try channel.finish().isClean)
    }

    @Test("client-side decoding starts with frames, not a preface")
    func clientSide() throws {
        let hello = FrameHeader(payloadLength: 3, type: .hello)
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: [
                (
                    self.frameBytes(hello, "abc"),
                    [.frame(Frame(header: hello, payload: self.allocator.buffer(string: "abc")))]
                )
            ],
            decoderFactory: { FrameDecoder(maxPayloadSize: 1024, expectPreface: false) })
    }

    @Test("an oversized frame is reported from its header alone and its payload skipped unbuffered")
    func oversized() throws {
        let channel = EmbeddedChannel(
            handler: ByteToMessageHandler(FrameDecoder(maxPayloadSize: 16, expectPreface: false)))
        let big = FrameHeader(payloadLength: 1 << 30, type: .request, method: 6, requestID: 3)
        var headerOnly = self.allocator.buffer(capacity: 16)
        big.write(to: &headerOnly)
        try channel.writeInbound(headerOnly)
        #expect(try channel.readInbound(as: InboundFrame.self) == .oversized(big))

        // Feed a slice of the gigabyte: it is discarded, not emitted.
        let chunk = self.allocator.buffer(repeating: 0xAB, count: 1 << 16)
        for _ in 0..<4 { try channel.writeInbound(chunk) }
        #expect(try channel.readInbound(as: InboundFrame.self) == nil)

        // A decoder skipping a huge payload then sees the next frame once the payload ends.
        let channel2 = EmbeddedChannel(
            handler: ByteToMessageHandler(FrameDecoder(maxPayloadSize: 16, expectPreface: false)))
        let small = FrameHeader(payloadLength: 2, type: .request, method: 6, requestID: 4)
        let mid = FrameHeader(payloadLength: 40, type: .request, method: 6, requestID: 5)
        var bytes = self.allocator.buffer(capacity: 100)
        mid.write(to: &bytes)
        bytes.writeRepeatingByte(0x11, count: 40)
        var next = self.frameBytes(small, "ok")
        bytes.writeBuffer(&next)
        try channel2.writeInbound(bytes)
        #expect(try channel2.readInbound(as: InboundFrame.self) == .oversized(mid))
        #expect(
            try channel2.readInbound(as: InboundFrame.self)
                == .frame(Frame(header: small, payload: self.allocator.buffer(string: "ok"))))
        // The first stream ends with most of the gigabyte unsent: truncated.
        #expect(throws: FrameDecodingError.self) { try channel.finish() }
        #expect(try channel2.finish().isClean)
    }

    @Test("an oversized payload is consumed as it arrives, never held")
    func oversizedNotBuffered() throws {
        var decoder = FrameDecoder(maxPayloadSize: 16, expectPreface: false)
        var buffer = ByteBuffer()
        FrameHeader(payloadLength: 1000, type: .request, requestID: 1).write(to: &buffer)
        #expect(
            try decoder.decode(buffer: &buffer)
                == .oversized(FrameHeader(payloadLength: 1000, type: .request, requestID: 1)))
        for _ in 0..<9 {
            var chunk = ByteBuffer(repeating: 7, count: 100)
            #expect(try decoder.decode(buffer: &chunk) == nil)
            #expect(chunk.readableBytes == 0)
        }
        // The last 100 payload bytes, then a whole frame.
        var tail = ByteBuffer(repeating: 7, count: 100)
        FrameHeader(payloadLength: 1, type: .ping).write(to: &tail)
        tail.writeInteger(UInt8(5))
        #expect(
            try decoder.decode(buffer: &tail)
                == .frame(Frame(header: FrameHeader(payloadLength: 1, type: .ping), payload: ByteBuffer(bytes: [5]))))
        #expect(tail.readableBytes == 0)
    }

    @Test("a stream that is not InferWire fails the preface")
    func badPreface() throws {
        let channel = EmbeddedChannel(
            handler: ByteToMessageHandler(FrameDecoder(maxPayloadSize: 16, expectPreface: true)))
        #expect(throws: FrameDecodingError.self) {
            try channel.writeInbound(self.allocator.buffer(bytes: [0x00, 0x01, 0x02, 0x03, 0, 0, 0, 0]))
        }
    }

    @Test("an HTTP request line is recognised")
    func http() throws {
        let channel = EmbeddedChannel(
            handler: ByteToMessageHandler(FrameDecoder(maxPayloadSize: 16, expectPreface: true)))
        try channel.writeInbound(self.allocator.buffer(string: "GE"))
        #expect(try channel.readInbound(as: InboundFrame.self) == nil)
        try channel.writeInbound(self.allocator.buffer(string: "T / HTTP/1.1\r\n\r\n"))
        #expect(try channel.readInbound(as: InboundFrame.self) == .httpRequest)
    }

    @Test("a stream that ends inside a frame reports a truncated frame")
    func truncated() throws {
        var decoder = FrameDecoder(maxPayloadSize: 64, expectPreface: false)
        var buffer = self.frameBytes(FrameHeader(payloadLength: 10, type: .request, requestID: 1), "0123456789")
        buffer.moveWriterIndex(to: buffer.writerIndex - 4)
        #expect(try decoder.decode(buffer: &buffer) == nil)
        let error = #expect(throws: FrameDecodingError.self) { try decoder.decodeLast(buffer: &buffer, seenEOF: true) }
        #expect(error?.kind == .truncated)
        #expect(error?.message.contains("6 of 10 payload bytes") == true)
    }

    @Test("header fields round-trip big-endian at their documented offsets")
    func headerLayout() {
        var buffer = self.allocator.buffer(capacity: 16)
        FrameHeader(
            payloadLength: 0x0102_0304, type: .response, flags: .compressed, method: 0x0506, requestID: 0x0708_090A,
            timeoutMicros: 0x0B0C_0D0E
        )
        .write(to: &buffer)
        #expect(Array(buffer.readableBytesView) == [1, 2, 3, 4, 0x03, 0x01, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    }
}

@Suite("Payload compression")
struct CompressionTests {
    let allocator = ByteBufferAllocator()

    @Test("deflate then inflate returns the original bytes")
    func roundTrip() throws {
        let original = self.allocator.buffer(bytes: (0..<10_000).map { UInt8(truncatingIfNeeded: $0 % 17) })
        let compressed = PayloadCompression.compress(original, allocator: self.allocator)
        #expect(compressed.readableBytes < original.readableBytes / 4)
        #expect(try PayloadCompression.decompress(compressed, limit: 10_000, allocator: self.allocator) == original)
    }

    @Test("inflating past the limit stops at the limit")
    func bomb() throws {
        let zeros = self.allocator.buffer(repeating: 0, count: 8 << 20)
        let compressed = PayloadCompression.compress(zeros, allocator: self.allocator)
        let error = #expect(throws: PayloadCompression.Error.self) {
            try PayloadCompression.decompress(compressed, limit: 1 << 20, allocator: self.allocator)
        }
        #expect(error?.kind == .tooLarge)
    }

    @Test("bytes that are not zlib are rejected")
    func corrupt() throws {
        let error = #expect(throws: PayloadCompression.Error.self) {
            try PayloadCompression.decompress(
                self.allocator.buffer(string: "definitely not zlib"), limit: 1024, allocator: self.allocator)
        }
        #expect(error?.kind == .corrupt)
        // A valid stream cut short is corrupt too, not silently short.
        var cut = PayloadCompression.compress(
            self.allocator.buffer(repeating: 7, count: 5000), allocator: self.allocator)
        cut.moveWriterIndex(to: cut.writerIndex - 3)
        #expect(throws: PayloadCompression.Error.self) {
            try PayloadCompression.decompress(cut, limit: 1 << 20, allocator: self.allocator)
        }
    }
}
