import Crypto
import CryptoExtras
import Foundation
import InferWireAuth
import InferWireCore
import InferWireEngine
import InferWireONNX
import InferWireProto
import InferWireServer
import InferWireWire
import JWTKit
import NIOCore
import Testing

@testable import InferWireClient

/// Token files, JWKS files and signed JWTs for the tests, in a temporary directory.
struct Credentials: Sendable {
    let directory: String
    let tokenFile: String
    let jwksFile: String
    let signers: JWTKeyCollection

    static let inferToken = "infer-token-0123456789"
    static let opsToken = "ops-token-0123456789"
    static let releaserToken = "releaser-token-0123456789"

    static func make() async throws -> Credentials {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "inferwire-auth-\(UUID().uuidString)"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let tokenFile = directory + "/tokens"
        let tokens = """
            # principal svc may only infer on add_sub and the mlp family
            token \(TokenFile.digest(of: inferToken)) svc infer add_sub,mlp*
            token sha256:\(TokenFile.digest(of: opsToken)) ops infer,manage,admin
            token \(TokenFile.digest(of: releaserToken)) releaser manage
            """
        try Data(tokens.utf8).write(to: URL(fileURLWithPath: tokenFile))

        // Signing keys of all three accepted kinds; the JWKS file holds what verifies them.
        let signers = JWTKeyCollection()
        let secret = Array("a shared HMAC secret of enough length".utf8)
        await signers.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: "hs")
        let ecdsa = ES256PrivateKey()
        await signers.add(ecdsa: ecdsa, kid: "es")
        let rsa = try Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
        await signers.add(rsa: rsa, digestAlgorithm: .sha256, kid: "rs")
        let (x, y) = ecdsa.publicKey.parameters!
        let (modulus, exponent) = try rsa.publicKey.getKeyPrimitives()
        func base64URL(_ data: some DataProtocol) -> String {
            Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        }
        let jwks: [String: Any] = [
            "keys": [
                ["kty": "oct", "kid": "hs", "alg": "HS256", "k": base64URL(secret)],
                ["kty": "EC", "kid": "es", "alg": "ES256", "crv": "P-256", "x": x, "y": y],
                ["kty": "RSA", "kid": "rs", "alg": "RS256", "n": base64URL(modulus), "e": base64URL(exponent)],
            ]
        ]
        let jwksFile = directory + "/jwks.json"
        try JSONSerialization.data(withJSONObject: jwks).write(to: URL(fileURLWithPath: jwksFile))
        return Credentials(directory: directory, tokenFile: tokenFile, jwksFile: jwksFile, signers: signers)
    }

    struct Claims: JWTPayload {
        var sub: SubjectClaim?
        var exp: ExpirationClaim?
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim?
        var aud: AudienceClaim?
        var roles: [String]?
        var models: [String]?
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    /// A JWT for `subject`, valid for an hour unless told otherwise.
    func jwt(
        kid: String = "hs", subject: String? = "jwt-user", roles: [String] = ["infer"], models: [String]? = nil,
        expires: Date? = Date().addingTimeInterval(3600), notBefore: Date? = nil, issuer: String? = "https://issuer",
        audience: [String]? = ["inferwire"]
    ) async throws -> String {
        let claims = Claims(
            sub: subject.map { SubjectClaim(value: $0) }, exp: expires.map { ExpirationClaim(value: $0) },
            nbf: notBefore.map { NotBeforeClaim(value: $0) }, iss: issuer.map { IssuerClaim(value: $0) },
            aud: audience.map { AudienceClaim(value: $0) }, roles: roles, models: models)
        return try await self.signers.sign(claims, kid: JWKIdentifier(string: kid))
    }

    func authenticator() async throws -> Authenticator {
        try await Authenticator(
            configuration: .init(
                tokenFile: self.tokenFile, jwks: self.jwksFile,
                jwtExpectations: .init(issuer: "https://issuer", audience: "inferwire")))
    }
}

@Suite("Authentication and roles", .timeLimit(.minutes(1)))
struct AuthenticationTests {
    func withAuthServer(
        handshakeTimeout: Duration = .seconds(10), _ body: @Sendable (Int, Credentials) async throws -> Void
    ) async throws {
        let credentials = try await Credentials.make()
        defer { try? FileManager.default.removeItem(atPath: credentials.directory) }
        let manager = ModelManager(
            repository: ModelRepository(
                directory: packageRoot + "/examples/models",
                loaders: ModelRepository.builtinLoaders + [OnnxModelLoader()]),
            configuration: .init(statePath: nil), logger: quiet)
        try await manager.start()
        let dispatcher = RequestDispatcher(registry: manager.registry, manager: manager)
        try await withServer(
            dispatcher: dispatcher, limits: .init(handshakeTimeout: handshakeTimeout),
            authenticator: try await credentials.authenticator(),
            services: [ModelManagerService(manager: manager, pollInterval: nil, guardInterval: .seconds(60))]
        ) { port in
            try await body(port, credentials)
        }
    }

    func connect(_ port: Int, token: String?) async throws -> InferWireClient {
        try await InferWireClient.connect(host: "127.0.0.1", port: port, configuration: .init(bearerToken: token))
    }

    @Test("a listed token authenticates the connection as its principal, with its roles and models")
    func token() async throws {
        try await self.withAuthServer { port, _ in
            let client = try await self.connect(port, token: Credentials.inferToken)
            #expect(client.principal?.name == "svc")
            #expect(client.principal?.roles == .infer)
            #expect(client.principal?.models.patterns == ["add_sub", "mlp*"])
            let result = try await client.infer(model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [1, 1, 1, 1]))
            #expect(result["OUTPUT0"]?.values(as: Float.self) == [2, 3, 4, 5])
            #expect(try await client.serverLive())
            await client.close()
        }
    }

    @Test("no token, or one the server does not know, fails the connection UNAUTHENTICATED with the reason")
    func badCredentials() async throws {
        try await self.withAuthServer { port, credentials in
            for (token, expected) in [
                (nil, "requires authentication"), ("not-a-listed-token", "not in the server's token file"),
                ("", "carries no bearer token"),
            ] {
                do {
                    _ = try await self.connect(port, token: token)
                    Issue.record("connected with \(token ?? "no token")")
                } catch let error as InferWireError {
                    #expect(error.code == .unauthenticated)
                    #expect(error.message.contains(expected), "\(error.message)")
                }
            }
            // The server goes on serving good clients.
            let client = try await self.connect(port, token: Credentials.opsToken)
            #expect(try await client.serverLive())
            await client.close()
        }
    }

    @Test("a call outside the principal's roles or models is PERMISSION_DENIED and the connection carries on")
    func roles() async throws {
        try await self.withAuthServer { port, _ in
            let svc = try await self.connect(port, token: Credentials.inferToken)
            for call in [
                { () async throws -> Void in _ = try await svc.loadModel("add_sub", version: 1) },
                { () async throws -> Void in _ = try await svc.listModels() },
                { () async throws -> Void in _ = try await svc.promote("add_sub") },
                { () async throws -> Void in _ = try await svc.modelMetadata("identity") },
                { () async throws -> Void in _ = try await svc.infer(model: "identity", inputs: []) },
            ] {
                do {
                    try await call()
                    Issue.record("a call outside the principal's grant succeeded")
                } catch let error as InferWireError {
                    #expect(error.code == .permissionDenied)
                    #expect(error.message.contains("'svc'"), "\(error.message)")
                }
            }
            #expect(try await svc.modelReady("add_sub").ready)
            // Statistics for every model list only those the principal may reach.
            let statistics = try await svc.modelStatistics()
            #expect(Set(statistics.map(\.name)).isSubset(of: ["add_sub", "mlp"]))
            await svc.close()

            let releaser = try await self.connect(port, token: Credentials.releaserToken)
            do {
                _ = try await releaser.infer(model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [1, 1, 1, 1]))
                Issue.record("a manage-only principal ran inference")
            } catch let error as InferWireError {
                #expect(error.code == .permissionDenied)
                #expect(error.message.contains("needs the role 'infer'"), "\(error.message)")
            }
            #expect(try await releaser.listModels().isEmpty == false)
            await releaser.close()
        }
    }

    @Test("rollout history records the principal behind each change")
    func historyPrincipal() async throws {
        try await self.withAuthServer { port, _ in
            let ops = try await self.connect(port, token: Credentials.opsToken)
            let stable = try #require(try await ops.modelStatus("fraud").rollout.stable)
            _ = try await ops.setTraffic("fraud", canary: stable == 2 ? 1 : 2, percent: 10)
            let entries = try await ops.history("fraud")
            let traffic = try #require(entries.last)
            #expect(traffic.action == "traffic")
            #expect(traffic.actor == "api")
            #expect(traffic.principal == "ops")
            await ops.close()
        }
    }

    @Test("JWTs signed HS256, ES256 and RS256 by trusted keys authenticate as their subject")
    func jwts() async throws {
        try await self.withAuthServer { port, credentials in
            for kid in ["hs", "es", "rs"] {
                let token = try await credentials.jwt(kid: kid, subject: "user-\(kid)", models: ["add_sub"])
                let client = try await self.connect(port, token: token)
                #expect(client.principal?.name == "user-\(kid)")
                #expect(client.principal?.expiresAt != nil)
                _ = try await client.infer(model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [1, 1, 1, 1]))
                await client.close()
            }
        }
    }

    @Test("a JWT that fails a check is refused with a message naming the check")
    func badJWTs() async throws {
        let credentials = try await Credentials.make()
        defer { try? FileManager.default.removeItem(atPath: credentials.directory) }
        let authenticator = try await credentials.authenticator()
        let past = Date().addingTimeInterval(-3600)
        let future = Date().addingTimeInterval(3600)
        let cases: [(String, String)] = [
            (try await credentials.jwt(expires: past), "expired at"),
            (try await credentials.jwt(expires: nil), "no exp claim"),
            (try await credentials.jwt(notBefore: future), "not valid before"),
            (try await credentials.jwt(issuer: "https://elsewhere"), "issuer 'https://elsewhere'"),
            (try await credentials.jwt(audience: ["someone-else"]), "does not include 'inferwire'"),
            (try await credentials.jwt(subject: nil), "no sub claim"),
            (try await credentials.jwt(roles: ["root"]), "unknown role 'root'"),
            (try await credentials.jwt(roles: []), "grants no role"),
        ]
        for (token, expected) in cases {
            do {
                _ = try await authenticator.authenticate(bearerToken: token)
                Issue.record("accepted a token that should fail with '\(expected)'")
            } catch {
                #expect(error.code == .unauthenticated)
                #expect(error.message.contains(expected), "\(error.message)")
            }
        }
        // A signature by a key outside the set, and an unsigned token.
        let stranger = JWTKeyCollection()
        await stranger.add(
            hmac: HMACKey(from: Array("some other secret entirely, also long enough".utf8)), digestAlgorithm: .sha256,
            kid: "hs")
        let forged = try await stranger.sign(
            Credentials.Claims(sub: "mallory", exp: .init(value: future), roles: ["admin"]), kid: "hs")
        await #expect(throws: InferWireError.self) { try await authenticator.authenticate(bearerToken: forged) }
        let parts = forged.split(separator: ".")
        let unsigned = "eyJhbGciOiJub25lIn0." + parts[1] + "."
        do {
            _ = try await authenticator.authenticate(bearerToken: unsigned)
            Issue.record("accepted alg none")
        } catch {
            #expect(error.message.contains("algorithm none is not accepted"), "\(error.message)")
        }
    }

    @Test("a client that predates AUTH gets UNAUTHENTICATED per request, then GOAWAY at the handshake timeout")
    func oldClient() async throws {
        try await self.withAuthServer(handshakeTimeout: .milliseconds(300)) { port, _ in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                let hello = try #require(try await connection.readFrame(ofType: .hello))
                #expect(try hello.decode(Inferwire_V1_Hello.self).authenticationRequired)
                try await connection.sendRequest(id: 1, method: .serverLive, Inferwire_V1_ServerLiveRequest())
                let error = try #require(try await connection.readFrame(ofType: .error))
                let status = try error.decode(Inferwire_V1_Status.self)
                #expect(status.code == .unauthenticated)
                #expect(status.message.contains("send an AUTH frame"))
                let goAway = try #require(try await connection.readFrame(ofType: .goAway))
                let reason = try goAway.decode(Inferwire_V1_GoAway.self)
                #expect(reason.code == .unauthenticated)
                #expect(reason.message.contains("no accepted credentials within"))
            }
        }
    }

    @Test("requests pipelined behind an AUTH act as its principal, in order")
    func pipelined() async throws {
        try await self.withAuthServer { port, credentials in
            let jwt = try await credentials.jwt(kid: "es", models: ["add_sub"])
            try await withRawConnection(port: port) { connection in
                var bytes = ByteBuffer()
                Preface().write(to: &bytes)
                var authenticate = Inferwire_V1_Authenticate()
                authenticate.bearerToken = jwt
                let credentials: [UInt8] = try authenticate.serializedBytes()
                var auth = Frame.encode(
                    FrameHeader(payloadLength: 0, type: .auth), bytes: credentials, allocator: ByteBufferAllocator())
                bytes.writeBuffer(&auth)
                for id in UInt32(1)...3 {
                    var ready = Inferwire_V1_ModelReadyRequest()
                    ready.name = id == 2 ? "identity" : "add_sub"
                    var request = Frame.request(
                        method: UInt16(Inferwire_V1_Method.modelReady.rawValue), payload: try ready.serializedBytes(),
                        timeout: nil, compression: false, allocator: ByteBufferAllocator())
                    Frame.setRequestID(id, in: &request)
                    bytes.writeBuffer(&request)
                }
                try await connection.send(bytes)
                let answer = try #require(try await connection.readFrame(ofType: .auth))
                #expect(try answer.decode(Inferwire_V1_Authenticated.self).principal.name == "jwt-user")
                var results: [UInt32: FrameType] = [:]
                while results.count < 3, let frame = try await connection.readFrame() {
                    results[frame.header.requestID] = frame.header.type
                }
                #expect(results == [1: .response, 2: .error, 3: .response])
            }
        }
    }

    @Test("a listener serving only inference, or only management, refuses the other kind UNIMPLEMENTED")
    func listenerServices() async throws {
        let registry = try makeRegistry()
        try await withServer(dispatcher: RequestDispatcher(registry: registry), listenerServices: .inference) {
            port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            do {
                _ = try await client.listModels()
                Issue.record("management answered on the inference listener")
            } catch let error as InferWireError {
                #expect(error.code == .unimplemented)
                #expect(error.message.contains("management listener"))
            }
            #expect(try await client.modelReady("add_sub").ready)
            await client.close()
        }
        try await withServer(dispatcher: RequestDispatcher(registry: registry), listenerServices: .management) {
            port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            do {
                _ = try await client.infer(model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [1, 1, 1, 1]))
                Issue.record("inference answered on the management listener")
            } catch let error as InferWireError {
                #expect(error.code == .unimplemented)
            }
            #expect(try await client.serverLive())
            await client.close()
        }
    }
}

@Suite("Token files")
struct TokenFileTests {
    @Test("lines name a digest or a certificate, a principal, roles and models; mistakes name their line")
    func parsing() throws {
        let file = try TokenFile(
            parsing: """
                # comment
                token \(TokenFile.digest(of: "abc")) alice infer,manage  # trailing comment
                certificate ci-runner admin fraud-*,mlp

                """)
        #expect(file.principal(forToken: "abc")?.name == "alice")
        #expect(file.principal(forToken: "abc")?.roles == [.infer, .manage])
        #expect(file.principal(forToken: "abd") == nil)
        let runner = try #require(file.certificates["ci-runner"])
        #expect(runner.models.contains("fraud-v2"))
        #expect(runner.models.contains("mlp"))
        #expect(!runner.models.contains("mlp2"))

        for (text, expected) in [
            ("token abc alice infer", "line 1: 'abc' is not a SHA-256 digest"),
            ("token \(TokenFile.digest(of: "x")) alice root", "line 1: unknown role 'root'"),
            ("\n\nsecret x y z", "line 3: unknown kind 'secret'"),
            ("token \(TokenFile.digest(of: "x")) alice", "line 1: expected"),
            ("certificate a infer\ncertificate a manage", "line 2: certificate 'a' is listed twice"),
        ] {
            do {
                _ = try TokenFile(parsing: text)
                Issue.record("parsed '\(text)'")
            } catch {
                #expect(error.message.contains(expected), "\(error.message)")
            }
        }
    }

    @Test("reloading replaces the tokens; a broken file keeps the old ones")
    func reload() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tokens-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data("token \(TokenFile.digest(of: "first")) a infer\n".utf8).write(to: URL(fileURLWithPath: path))
        let authenticator = try await Authenticator(configuration: .init(tokenFile: path))
        #expect(try await authenticator.authenticate(bearerToken: "first").name == "a")
        try Data("token \(TokenFile.digest(of: "second")) b infer\n".utf8).write(to: URL(fileURLWithPath: path))
        try await authenticator.reload()
        #expect(try await authenticator.authenticate(bearerToken: "second").name == "b")
        await #expect(throws: InferWireError.self) { try await authenticator.authenticate(bearerToken: "first") }
        try Data("garbage\n".utf8).write(to: URL(fileURLWithPath: path))
        await #expect(throws: InferWireError.self) { try await authenticator.reload() }
        #expect(try await authenticator.authenticate(bearerToken: "second").name == "b")
    }
}
