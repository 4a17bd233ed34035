import Foundation
public import InferWireCore
import Synchronization

/// Decides who a connection is: from a bearer token (the token file, or a JWT) or from a
/// TLS client certificate's common name. Its credentials can be replaced while serving
/// (``reload()``, on SIGHUP); connections already authenticated keep their principal.
public final class Authenticator: Sendable {
    /// Where credentials come from.
    public struct Configuration: Sendable, Equatable {
        /// The token file (``TokenFile``); nil: no opaque tokens or certificate principals.
        public var tokenFile: String?
        /// A JWKS file of keys that sign accepted JWTs; nil: JWTs are not accepted.
        public var jwks: String?
        /// What a JWT must name as issuer and audience.
        public var jwtExpectations: JWTVerifier.Expectations

        public init(tokenFile: String? = nil, jwks: String? = nil, jwtExpectations: JWTVerifier.Expectations = .init())
        {
            self.tokenFile = tokenFile
            self.jwks = jwks
            self.jwtExpectations = jwtExpectations
        }
    }

    private struct Credentials: Sendable {
        var tokens: TokenFile
        var jwt: JWTVerifier?
    }

    private let configuration: Configuration
    private let credentials: Mutex<Credentials>
    private let clock: @Sendable () -> Date

    /// Loads the configured files; throws naming the file and problem.
    ///
    /// - Parameter clock: the current time, for JWT expiry (tests inject one).
    public init(configuration: Configuration, clock: @escaping @Sendable () -> Date = { Date() })
        async throws(InferWireError)
    {
        self.configuration = configuration
        self.clock = clock
        self.credentials = Mutex(try await Self.load(configuration))
    }

    /// Rereads the files; on failure the current credentials stay and the error is thrown.
    public func reload() async throws(InferWireError) {
        let fresh = try await Self.load(self.configuration)
        self.credentials.withLock { $0 = fresh }
    }

    private static func load(_ configuration: Configuration) async throws(InferWireError) -> Credentials {
        var credentials = Credentials(tokens: TokenFile(), jwt: nil)
        if let path = configuration.tokenFile {
            credentials.tokens = try TokenFile(parsing: try Self.read(path, what: "token file"))
        }
        if let path = configuration.jwks {
            do {
                credentials.jwt = try await JWTVerifier(
                    jwks: try Self.read(path, what: "JWKS file"), expectations: configuration.jwtExpectations)
            } catch {
                throw InferWireError(code: error.code, message: "JWKS file \(path): \(error.message)")
            }
        }
        return credentials
    }

    private static func read(_ path: String, what: String) throws(InferWireError) -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw InferWireError(code: .invalidArgument, message: "cannot read the \(what) \(path)", cause: error)
        }
    }

    /// The principal a bearer token stands for, or UNAUTHENTICATED saying why not.
    public func authenticate(bearerToken token: String) async throws(InferWireError) -> Principal {
        guard !token.isEmpty else {
            throw InferWireError(code: .unauthenticated, message: "the AUTH frame carries no bearer token")
        }
        let (tokens, jwt) = self.credentials.withLock { ($0.tokens, $0.jwt) }
        if JWTVerifier.looksLikeJWT(token) {
            guard let jwt else {
                throw InferWireError(code: .unauthenticated, message: "this server accepts no JWTs (no key set)")
            }
            return try await jwt.verify(token, now: self.clock())
        }
        guard let principal = tokens.principal(forToken: token) else {
            throw InferWireError(code: .unauthenticated, message: "the bearer token is not in the server's token file")
        }
        return principal
    }

    /// The principal a verified TLS client certificate stands for, if its common name is
    /// listed in the token file.
    public func principal(forCertificateCommonName name: String) -> Principal? {
        self.credentials.withLock { $0.tokens.certificates[name] }
    }
}
