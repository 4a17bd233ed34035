public import NIOCore

/// What the frame decoder hands to the next handler.
public enum InboundFrame: Sendable, Equatable {
    /// A client's connection preface (server side only, always first).
    case preface(Preface)
    /// The peer opened with an HTTP request line instead of a preface.
    case httpRequest
    /// A complete frame whose payload is within the limit.
    case frame(Frame)
    /// A frame whose declared length exceeds the limit. Only the header was read;
    /// the decoder discards the payload bytes as they arrive and never buffers them.
    case oversized(FrameHeader)
}

/// Errors from which a byte stream cannot be resynchronised: the connection must end.
public struct FrameDecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// The first 8 bytes were not `IWIR` + versions.
        case badPreface
        /// The stream ended inside a frame header or payload.
        case truncated
        /// The stream opened with a TLS handshake record: a TLS client on a plaintext port.
        case tlsHandshake
    }

    public var kind: Kind
    public var message: String

    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { self.message }
}

/// Splits a byte stream into InferWire frames.
///
/// The declared payload length is checked against `maxPayloadSize` from the header
/// alone, before any payload byte is buffered: an oversized frame is reported as
/// ``InboundFrame/oversized(_:)`` and its payload is then skipped as it streams in,
/// so the connection survives and memory stays bounded.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = InboundFrame

    private enum State {
        case awaitingPreface
        case awaitingFrame
        case skipping(remaining: Int)
    }

    /// Largest payload, in bytes, that the decoder buffers.
    public let maxPayloadSize: Int
    private var state: State

    /// - Parameters:
    ///   - maxPayloadSize: largest payload to accept; longer frames become `.oversized`.
    ///   - expectPreface: true on the server, which reads the client's preface first.
    public init(maxPayloadSize: Int, expectPreface: Bool) {
        self.maxPayloadSize = maxPayloadSize
        self.state = expectPreface ? .awaitingPreface : .awaitingFrame
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> InboundFrame? {
        while true {
            switch self.state {
            case .awaitingPreface:
                return try self.decodePreface(buffer: &buffer)

            case .skipping(let remaining):
                let n = min(remaining, buffer.readableBytes)
                buffer.moveReaderIndex(forwardBy: n)
                if n == remaining {
                    self.state = .awaitingFrame
                    continue
                }
                self.state = .skipping(remaining: remaining - n)
                return nil

            case .awaitingFrame:
                guard let header = FrameHeader.peek(from: buffer) else { return nil }
                let length = Int(header.payloadLength)
                if length > self.maxPayloadSize {
                    buffer.moveReaderIndex(forwardBy: FrameHeader.size)
                    self.state = length > 0 ? .skipping(remaining: length) : .awaitingFrame
                    return .oversized(header)
                }
                guard buffer.readableBytes >= FrameHeader.size + length else { return nil }
                buffer.moveReaderIndex(forwardBy: FrameHeader.size)
                let payload = buffer.readSlice(length: length)!
                return .frame(Frame(header: header, payload: payload))
            }
        }
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> InboundFrame? {
        if let frame = try self.decode(buffer: &buffer) { return frame }
        guard buffer.readableBytes > 0 || self.isMidFrame || self.isAwaitingPreface else { return nil }
        let message: String
        switch self.state {
        case .awaitingPreface:
            message = "stream ended before the connection preface (\(buffer.readableBytes) of \(Preface.size) bytes)"
        case .awaitingFrame:
            if let header = FrameHeader.peek(from: buffer) {
                message =
                    "stream ended inside a \(header.type) frame: "
                    + "\(buffer.readableBytes - FrameHeader.size) of \(header.payloadLength) payload bytes received"
            } else {
                message =
                    "stream ended inside a frame header: \(buffer.readableBytes) of \(FrameHeader.size) bytes received"
            }
        case .skipping(let remaining):
            message = "stream ended inside an oversized frame, \(remaining) payload bytes short"
        }
        buffer.moveReaderIndex(to: buffer.writerIndex)
        throw FrameDecodingError(kind: .truncated, message: message)
    }

    /// A stream that ends before its preface, even with no byte at all, is truncated.
    private var isAwaitingPreface: Bool {
        if case .awaitingPreface = self.state { return true }
        return false
    }

    private var isMidFrame: Bool {
        if case .skipping = self.state { return true }
        return false
    }

    private mutating func decodePreface(buffer: inout ByteBuffer) throws -> InboundFrame? {
        // Judge the first four bytes as soon as they arrive, so an HTTP client or a
        // stray byte stream is answered without waiting for more input.
        let prefixLength = min(buffer.readableBytes, Preface.magic.count)
        guard let prefix = buffer.getBytes(at: buffer.readerIndex, length: prefixLength) else { return nil }
        if prefix != Array(Preface.magic.prefix(prefixLength)) {
            if prefixLength == 4, Preface.httpMethodPrefixes.contains(prefix) {
                buffer.moveReaderIndex(to: buffer.writerIndex)
                return .httpRequest
            }
            if prefixLength < 4, Preface.httpMethodPrefixes.contains(where: { $0.starts(with: prefix) }) {
                return nil
            }
            // A TLS record: content type 22 (handshake), then major version 3.
            if prefix.first == 0x16 {
                guard prefixLength >= 2 else { return nil }
                if prefix[1] == 0x03 {
                    throw FrameDecodingError(
                        kind: .tlsHandshake,
                        message: "this port speaks plaintext InferWire, not TLS: connect without TLS, or to a TLS port")
                }
            }
            throw FrameDecodingError(
                kind: .badPreface,
                message: "bad connection preface: expected the bytes 'IWIR' + version range, got "
                    + prefix.map { String(format2: $0) }.joined(separator: " "))
        }
        guard buffer.readableBytes >= Preface.size else { return nil }
        buffer.moveReaderIndex(forwardBy: Preface.magic.count)
        let (minVersion, maxVersion) = buffer.readMultipleIntegers(as: (UInt16, UInt16).self)!
        self.state = .awaitingFrame
        return .preface(Preface(minVersion: minVersion, maxVersion: maxVersion))
    }
}

extension String {
    /// Two lowercase hex digits.
    init(format2 byte: UInt8) {
        let digits = Array("0123456789abcdef")
        self = String([digits[Int(byte >> 4)], digits[Int(byte & 0x0f)]])
    }
}
