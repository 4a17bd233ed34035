package import InferWireProto
public import NIOCore

/// The client's half of opening a connection, shared by the client library and the load
/// generator: the preface goes out exactly once, as soon as the channel is active, and
/// the server's HELLO (or a GOAWAY instead of it) settles the handshake.
public struct ClientHandshake: Sendable {
    /// How the handshake ended.
    package enum Outcome: Sendable {
        /// HELLO arrived: the connection is open with these limits.
        case established(Inferwire_V1_Hello)
        /// The server refused the connection (GOAWAY before HELLO) or sent an unreadable HELLO.
        case failed(code: Inferwire_V1_StatusCode, message: String)
    }

    private var prefaceSent = false
    /// The server's HELLO, once received.
    package private(set) var hello: Inferwire_V1_Hello?

    public init() {}

    /// Whether the handshake has completed.
    public var isEstablished: Bool { self.hello != nil }

    /// The preface to write and flush, the first time it is asked for; nil afterwards.
    /// Ask from `handlerAdded` (when the channel is already active) and `channelActive`.
    public mutating func preface(allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard !self.prefaceSent else { return nil }
        self.prefaceSent = true
        var buffer = allocator.buffer(capacity: Preface.size)
        Preface().write(to: &buffer)
        return buffer
    }

    /// Settles the handshake from a frame: HELLO establishes it, a GOAWAY before HELLO
    /// fails it. Returns nil for every other frame, and for anything after HELLO.
    package mutating func receive(_ frame: Frame) -> Outcome? {
        guard self.hello == nil else { return nil }
        switch frame.header.type {
        case .hello:
            guard let hello = try? Inferwire_V1_Hello(serializedBytes: [UInt8](buffer: frame.payload)) else {
                return .failed(code: .internal, message: "server sent a malformed HELLO")
            }
            self.hello = hello
            return .established(hello)
        case .goAway:
            let goAway = Self.goAway(in: frame)
            return .failed(
                code: goAway.code == .ok ? .unavailable : goAway.code, message: "server sent GOAWAY: \(goAway.message)")
        default:
            return nil
        }
    }

    /// The GOAWAY message a frame carries; an unreadable payload reads as an empty one.
    package static func goAway(in frame: Frame) -> Inferwire_V1_GoAway {
        (try? Inferwire_V1_GoAway(serializedBytes: [UInt8](buffer: frame.payload))) ?? Inferwire_V1_GoAway()
    }
}
