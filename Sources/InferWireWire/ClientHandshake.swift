package import InferWireProto
public import NIOCore

/// The client's half of opening a connection, shared by the client library and the load
/// generator: the preface (and, with a bearer token, an AUTH frame right behind it) goes
/// out exactly once, as soon as the channel is active; the server's HELLO — and its AUTH
/// answer when credentials were sent — or a GOAWAY settles the handshake.
public struct ClientHandshake: Sendable {
    /// How the handshake ended.
    package enum Outcome: Sendable {
        /// HELLO (and the AUTH answer, if credentials were sent) arrived: the connection is
        /// open with these limits, acting as this principal (nil: no authentication).
        case established(Inferwire_V1_Hello, principal: Inferwire_V1_Principal?)
        /// The server refused the connection (GOAWAY before the handshake completed) or sent
        /// an unreadable HELLO or AUTH.
        case failed(code: Inferwire_V1_StatusCode, message: String)
    }

    private let bearerToken: String?
    private var prefaceSent = false
    private var principal: Inferwire_V1_Principal?
    /// The server's HELLO, once received.
    package private(set) var hello: Inferwire_V1_Hello?
    /// Whether the handshake has completed.
    public private(set) var isEstablished = false

    /// - Parameter bearerToken: credentials to present in an AUTH frame (PROTOCOL.md 1b).
    public init(bearerToken: String? = nil) {
        self.bearerToken = bearerToken
    }

    /// The preface (and AUTH) to write and flush, the first time it is asked for; nil
    /// afterwards. Ask from `handlerAdded` (when the channel is already active) and
    /// `channelActive`.
    public mutating func preface(allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard !self.prefaceSent else { return nil }
        self.prefaceSent = true
        var buffer = allocator.buffer(capacity: Preface.size)
        Preface().write(to: &buffer)
        if let token = self.bearerToken {
            var authenticate = Inferwire_V1_Authenticate()
            authenticate.bearerToken = token
            var auth = Frame.encode(
                FrameHeader(payloadLength: 0, type: .auth), bytes: (try? authenticate.serializedBytes()) ?? [],
                allocator: allocator)
            buffer.writeBuffer(&auth)
        }
        return buffer
    }

    /// Settles the handshake from a frame: HELLO (with the AUTH answer when credentials
    /// were sent) establishes it, a GOAWAY before that fails it. Returns nil for every
    /// other frame, and for anything once established.
    package mutating func receive(_ frame: Frame) -> Outcome? {
        guard !self.isEstablished else { return nil }
        switch frame.header.type {
        case .hello:
            guard self.hello == nil,
                let hello = try? Inferwire_V1_Hello(serializedBytes: [UInt8](buffer: frame.payload))
            else {
                return .failed(code: .internal, message: "server sent a malformed HELLO")
            }
            self.hello = hello
            if self.bearerToken == nil && hello.authenticationRequired && !hello.hasPrincipal {
                return .failed(
                    code: .unauthenticated,
                    message:
                        "the server requires authentication: connect with a bearer token (or a client certificate it knows)"
                )
            }
            if self.bearerToken == nil && hello.hasPrincipal { self.principal = hello.principal }
            return self.establishIfComplete()
        case .auth:
            guard let answer = try? Inferwire_V1_Authenticated(serializedBytes: [UInt8](buffer: frame.payload)) else {
                return .failed(code: .internal, message: "server sent a malformed AUTH answer")
            }
            self.principal = answer.principal
            return self.establishIfComplete()
        case .goAway:
            let goAway = Self.goAway(in: frame)
            return .failed(
                code: goAway.code == .ok ? .unavailable : goAway.code, message: "server sent GOAWAY: \(goAway.message)")
        default:
            return nil
        }
    }

    private mutating func establishIfComplete() -> Outcome? {
        guard let hello = self.hello, self.bearerToken == nil || self.principal != nil else { return nil }
        self.isEstablished = true
        return .established(hello, principal: self.principal)
    }

    /// The GOAWAY message a frame carries; an unreadable payload reads as an empty one.
    package static func goAway(in frame: Frame) -> Inferwire_V1_GoAway {
        (try? Inferwire_V1_GoAway(serializedBytes: [UInt8](buffer: frame.payload))) ?? Inferwire_V1_GoAway()
    }
}
