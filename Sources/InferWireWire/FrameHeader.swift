public import NIOCore

/// The kind of a frame: the fifth byte of its header.
public struct FrameType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Server → client, once, after a valid preface: the negotiated version and limits.
    public static let hello = FrameType(rawValue: 0x01)
    /// Client → server: one call of `method`; the payload is the method's request message.
    public static let request = FrameType(rawValue: 0x02)
    /// Server → client: the successful answer to the request with the same id.
    public static let response = FrameType(rawValue: 0x03)
    /// Server → client: a `Status` explaining why the request with the same id failed.
    public static let error = FrameType(rawValue: 0x04)
    /// Client → server: the caller gave up on the request with this id.
    public static let cancel = FrameType(rawValue: 0x05)
    /// Either way: a liveness probe; the receiver answers PONG with the same payload.
    public static let ping = FrameType(rawValue: 0x06)
    /// The answer to a PING.
    public static let pong = FrameType(rawValue: 0x07)
    /// Either way: the sender accepts no new requests on this connection.
    public static let goAway = FrameType(rawValue: 0x08)
    /// Credentials from the client; the accepted principal from the server.
    public static let auth = FrameType(rawValue: 0x09)

    /// Whether this version of the protocol defines the type.
    public var isKnown: Bool { (0x01...0x09).contains(self.rawValue) }

    public var description: String {
        switch self {
        case .hello: "HELLO"
        case .request: "REQUEST"
        case .response: "RESPONSE"
        case .error: "ERROR"
        case .cancel: "CANCEL"
        case .ping: "PING"
        case .pong: "PONG"
        case .goAway: "GOAWAY"
        case .auth: "AUTH"
        default: "0x" + String(self.rawValue, radix: 16)
        }
    }
}

/// Bit flags in the sixth byte of a frame header.
public struct FrameFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The payload is a zlib stream (RFC 1950); the receiver inflates it before parsing.
    public static let compressed = FrameFlags(rawValue: 0x01)
    /// On a REQUEST: the client accepts a compressed RESPONSE payload.
    public static let compressResponse = FrameFlags(rawValue: 0x02)
}

/// The fixed 16-byte header that starts every frame. All integers are big-endian.
///
/// ```
/// offset  size  field
///      0     4  payload length (bytes after the header)
///      4     1  type
///      5     1  flags
///      6     2  method (REQUEST/RESPONSE/ERROR; else 0)
///      8     4  request id (0: the connection itself)
///     12     4  timeout in microseconds (REQUEST only; 0: none)
/// ```
public struct FrameHeader: Hashable, Sendable {
    /// Size of the encoded header in bytes.
    public static let size = 16
    /// Where the request id sits in an encoded header.
    public static let requestIDOffset = 8

    public var payloadLength: UInt32
    public var type: FrameType
    public var flags: FrameFlags
    public var method: UInt16
    public var requestID: UInt32
    /// Relative deadline of a REQUEST, in microseconds from its arrival; 0 for none.
    public var timeoutMicros: UInt32

    public init(
        payloadLength: UInt32,
        type: FrameType,
        flags: FrameFlags = [],
        method: UInt16 = 0,
        requestID: UInt32 = 0,
        timeoutMicros: UInt32 = 0
    ) {
        self.payloadLength = payloadLength
        self.type = type
        self.flags = flags
        self.method = method
        self.requestID = requestID
        self.timeoutMicros = timeoutMicros
    }

    /// Reads a header at the reader index without moving it; nil if fewer than 16 bytes are readable.
    public static func peek(from buffer: ByteBuffer) -> FrameHeader? {
        let at = buffer.readerIndex
        guard buffer.readableBytes >= Self.size,
            let length = buffer.getInteger(at: at, as: UInt32.self),
            let type = buffer.getInteger(at: at + 4, as: UInt8.self),
            let flags = buffer.getInteger(at: at + 5, as: UInt8.self),
            let method = buffer.getInteger(at: at + 6, as: UInt16.self),
            let id = buffer.getInteger(at: at + 8, as: UInt32.self),
            let timeout = buffer.getInteger(at: at + 12, as: UInt32.self)
        else { return nil }
        return FrameHeader(
            payloadLength: length, type: FrameType(rawValue: type), flags: FrameFlags(rawValue: flags),
            method: method, requestID: id, timeoutMicros: timeout)
    }

    /// Appends the 16 header bytes to `buffer`.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeMultipleIntegers(
            self.payloadLength, self.type.rawValue, self.flags.rawValue, self.method, self.requestID,
            self.timeoutMicros)
    }
}

/// One whole frame: its header and its payload as received (still compressed if flagged).
public struct Frame: Sendable, Equatable {
    public var header: FrameHeader
    public var payload: ByteBuffer

    public init(header: FrameHeader, payload: ByteBuffer) {
        self.header = header
        self.payload = payload
    }

    /// Encodes a frame into one buffer (one write, one syscall when flushed alone).
    ///
    /// The header's `payloadLength` is taken from `payload`.
    public static func encode(
        _ header: FrameHeader, payload: ByteBuffer?, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let length = payload?.readableBytes ?? 0
        var buffer = allocator.buffer(capacity: FrameHeader.size + length)
        var header = header
        header.payloadLength = UInt32(length)
        header.write(to: &buffer)
        if var payload { buffer.writeBuffer(&payload) }
        return buffer
    }

    /// Encodes a frame whose payload is a byte array.
    public static func encode(
        _ header: FrameHeader, bytes: some Collection<UInt8>, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: FrameHeader.size + bytes.count)
        var header = header
        header.payloadLength = UInt32(bytes.count)
        header.write(to: &buffer)
        buffer.writeBytes(bytes)
        return buffer
    }
}
