public import InferWireCore
import InferWireProto
import InferWireWire
import NIOCore
import NIOSSL
import SwiftASN1
import Synchronization
import X509

extension InferWireServer.Configuration {
    /// The server's TLS identity and, for mutual TLS, the CA its clients' certificates must
    /// chain to. Files are PEM.
    public struct TLS: Sendable, Equatable {
        /// The server's certificate chain, leaf first.
        public var certificateChainPath: String
        public var privateKeyPath: String
        /// Clients must present a certificate issued by this CA; nil: no client certificates.
        public var clientCAPath: String?

        public init(certificateChainPath: String, privateKeyPath: String, clientCAPath: String? = nil) {
            self.certificateChainPath = certificateChainPath
            self.privateKeyPath = privateKeyPath
            self.clientCAPath = clientCAPath
        }
    }
}

/// The TLS context new connections use; replaced on reload (open connections keep theirs).
final class TLSContextStore: Sendable {
    /// The ALPN protocol name of this protocol's version 1.
    static let applicationProtocol = "inferwire/1"

    let files: InferWireServer.Configuration.TLS
    private let context: Mutex<NIOSSLContext>

    init(files: InferWireServer.Configuration.TLS) throws(InferWireError) {
        self.files = files
        self.context = Mutex(try Self.makeContext(files))
    }

    var current: NIOSSLContext { self.context.withLock { $0 } }

    /// Rereads the files; on failure the current context stays and the error is thrown.
    func reload() throws(InferWireError) {
        let fresh = try Self.makeContext(self.files)
        self.context.withLock { $0 = fresh }
    }

    static func makeContext(_ files: InferWireServer.Configuration.TLS) throws(InferWireError) -> NIOSSLContext {
        func load<T>(_ what: String, _ path: String, _ body: () throws -> T) throws(InferWireError) -> T {
            do {
                return try body()
            } catch {
                throw InferWireError(code: .invalidArgument, message: "cannot load the TLS \(what) \(path): \(error)")
            }
        }
        let chain = try load("certificate", files.certificateChainPath) {
            try NIOSSLCertificate.fromPEMFile(files.certificateChainPath)
        }
        guard !chain.isEmpty else {
            throw InferWireError(
                code: .invalidArgument, message: "the TLS certificate file \(files.certificateChainPath) holds none")
        }
        let key = try load("private key", files.privateKeyPath) {
            try NIOSSLPrivateKey(file: files.privateKeyPath, format: .pem)
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = [Self.applicationProtocol]
        if let caPath = files.clientCAPath {
            let roots = try load("client CA", caPath) { try NIOSSLCertificate.fromPEMFile(caPath) }
            guard !roots.isEmpty else {
                throw InferWireError(code: .invalidArgument, message: "the TLS client CA file \(caPath) holds none")
            }
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(roots)
            configuration.sendCANameList = true
        }
        return try load("configuration", files.certificateChainPath) { try NIOSSLContext(configuration: configuration) }
    }

    /// The subject common name of a verified peer certificate.
    static func commonName(of certificate: NIOSSLCertificate) -> String? {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else {
            return nil
        }
        for relativeName in parsed.subject {
            for attribute in relativeName where attribute.type == .RDNAttributeType.commonName {
                return attribute.value.description
            }
        }
        return nil
    }
}

/// The first handler of a connection on a TLS port: a TLS ClientHello gets the TLS handler
/// put in front of the connection; the plaintext InferWire preface gets a plaintext GOAWAY
/// saying the port requires TLS (PROTOCOL.md section 1a).
final class TLSSniffingHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let contexts: TLSContextStore
    private let rejections: RateLimitedLog

    init(contexts: TLSContextStore, rejections: RateLimitedLog) {
        self.contexts = contexts
        self.rejections = rejections
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = self.unwrapInboundIn(data)
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return }
        // "I" starts the InferWire preface magic; 0x16 a TLS handshake record.
        if first == Preface.magic.first {
            self.rejections.log("plaintext-on-tls", "closing a plaintext connection to the TLS port")
            RefusingHandler.sendGoAway(
                code: .failedPrecondition,
                message: "this port requires TLS: connect with TLS (ALPN \(TLSContextStore.applicationProtocol))",
                context: context)
            return
        }
        do {
            let handler = try NIOSSLServerHandler(context: self.contexts.current)
            try context.pipeline.syncOperations.addHandler(handler, position: .after(self))
        } catch {
            self.rejections.log("tls", "closing a connection: no TLS handler: \(error)")
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
