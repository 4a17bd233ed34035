import Foundation
import InferWireAuth
import InferWireCore
import InferWireEngine
import InferWireServer
import Testing

@testable import InferWireClient

/// The certificates every TLS test uses, made once per test process.
let testCertificates = Result { try TestCertificates.make() }

@Suite("TLS", .timeLimit(.minutes(1)))
struct TLSTests {
    let certificates: TestCertificates

    init() throws {
        self.certificates = try testCertificates.get()
    }

    func serverTLS(_ name: String = "server", clientCA: Bool = false) -> InferWireServer.Configuration.TLS {
        .init(
            certificateChainPath: self.certificates.certificate(name), privateKeyPath: self.certificates.key(name),
            clientCAPath: clientCA ? self.certificates.caFile : nil)
    }

    func clientConfiguration(
        ca: String? = nil, client: String? = nil, serverName: String? = nil, token: String? = nil
    ) -> InferWireClient.Configuration {
        .init(
            tls: .init(
                caFile: ca ?? self.certificates.caFile, certificateChainFile: client.map(self.certificates.certificate),
                privateKeyFile: client.map(self.certificates.key), serverName: serverName),
            bearerToken: token)
    }

    /// The error `connect` throws with `configuration`.
    func connectError(port: Int, _ configuration: InferWireClient.Configuration, host: String = "127.0.0.1")
        async -> InferWireError?
    {
        do {
            let client = try await InferWireClient.connect(host: host, port: port, configuration: configuration)
            await client.close()
            return nil
        } catch {
            return error as? InferWireError
        }
    }

    @Test("a client that trusts the server's CA connects over TLS and infers")
    func inferOverTLS() async throws {
        try await withServer(dispatcher: RequestDispatcher(registry: try makeRegistry()), tls: self.serverTLS()) {
            port in
            for host in ["127.0.0.1", "localhost"] {
                let client = try await InferWireClient.connect(
                    host: host, port: port, configuration: self.clientConfiguration())
                let result = try await client.infer(
                    model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [1, 1, 1, 1]))
                #expect(result["OUTPUT0"]?.values(as: Float.self) == [2, 3, 4, 5])
                #expect(client.principal == nil)
                await client.close()
            }
        }
    }

    @Test("the server's certificate is verified: another CA, an expired certificate, another host name all fail")
    func verification() async throws {
        let cases: [(server: String, host: String, expect: String)] = [
            ("wrong-ca", "127.0.0.1", "does not verify"), ("expired", "127.0.0.1", "does not verify"),
            ("other-host", "127.0.0.1", "not for this host"), ("other-host", "localhost", "not for this host"),
        ]
        for (name, host, expected) in cases {
            try await withServer(dispatcher: RequestDispatcher(registry: try makeRegistry()), tls: self.serverTLS(name))
            { port in
                let error = await self.connectError(port: port, self.clientConfiguration(), host: host)
                #expect(error?.code == .unavailable, "\(name)")
                #expect(error?.message.contains("TLS handshake failed") == true, "\(name): \(error?.message ?? "")")
                if !expected.isEmpty {
                    #expect(error?.message.contains(expected) == true, "\(name): \(error?.message ?? "")")
                }
            }
        }
        // The client trusts the system's roots by default, which do not hold the test CA.
        try await withServer(dispatcher: RequestDispatcher(registry: try makeRegistry()), tls: self.serverTLS()) {
            port in
            let error = await self.connectError(port: port, .init(tls: .system))
            #expect(error?.message.contains("does not verify") == true, "\(error?.message ?? "")")

        }
    }

    @Test("mutual TLS refuses a client without a certificate, or with one from another CA, and serves one with")
    func mutualTLS() async throws {
        try await withServer(
            dispatcher: RequestDispatcher(registry: try makeRegistry()), tls: self.serverTLS(clientCA: true)
        ) { port in
            let missing = await self.connectError(port: port, self.clientConfiguration())
            #expect(missing?.code == .unavailable)
            #expect(missing?.message.contains("requires a client certificate") == true, "\(missing?.message ?? "")")
            let stranger = await self.connectError(port: port, self.clientConfiguration(client: "stranger"))
            #expect(
                stranger?.message.contains("did not accept the client certificate") == true,
                "\(stranger?.message ?? "")")

            let client = try await InferWireClient.connect(
                host: "127.0.0.1", port: port, configuration: self.clientConfiguration(client: "client"))
            #expect(try await client.serverLive())
            await client.close()
        }
    }

    @Test("a plaintext client on a TLS port, and a TLS client on a plaintext port, are each told so")
    func mismatchedTransport() async throws {
        try await withServer(dispatcher: RequestDispatcher(registry: try makeRegistry()), tls: self.serverTLS()) {
            port in
            let error = await self.connectError(port: port, .defaults)
            #expect(error?.code == .failedPrecondition)
            #expect(error?.message.contains("this port requires TLS") == true, "\(error?.message ?? "")")
        }
        try await withServer { port in
            let error = await self.connectError(port: port, self.clientConfiguration())
            #expect(error?.code == .unavailable)
            #expect(error?.message.contains("does not speak TLS") == true, "\(error?.message ?? "")")
            // The server stays usable.
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            #expect(try await client.serverLive())
            await client.close()
        }
    }

    @Test("a certificate the token file lists authenticates the connection as its common name")
    func certificatePrincipal() async throws {
        let file = self.certificates.directory + "/certificate-tokens"
        try Data("certificate ci-runner infer add_sub\n".utf8).write(to: URL(fileURLWithPath: file))
        let authenticator = try await Authenticator(configuration: .init(tokenFile: file))
        try await withServer(
            dispatcher: RequestDispatcher(registry: try makeRegistry()), tls: self.serverTLS(clientCA: true),
            authenticator: authenticator
        ) { port in
            let client = try await InferWireClient.connect(
                host: "127.0.0.1", port: port, configuration: self.clientConfiguration(client: "client"))
            #expect(client.principal?.name == "ci-runner")
            #expect(client.principal?.roles == .infer)
            _ = try await client.infer(model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [1, 1, 1, 1]))
            await #expect(throws: InferWireError.self) { try await client.modelMetadata("mlp") }
            await client.close()
        }
    }

    @Test("reloading swaps the certificate for new connections")
    func reload() async throws {
        let live = self.certificates.directory + "/live"
        try FileManager.default.createDirectory(atPath: live, withIntermediateDirectories: true)
        @Sendable func install(_ name: String) throws {
            for (source, target) in [
                (self.certificates.certificate(name), live + "/cert.pem"),
                (self.certificates.key(name), live + "/key.pem"),
            ] {
                try? FileManager.default.removeItem(atPath: target)
                try FileManager.default.copyItem(atPath: source, toPath: target)
            }
        }
        try install("wrong-ca")
        let box = ServerBox()
        try await withServer(
            dispatcher: RequestDispatcher(registry: try makeRegistry()),
            tls: .init(certificateChainPath: live + "/cert.pem", privateKeyPath: live + "/key.pem"),
            onServer: box.store
        ) { port in
            #expect(await self.connectError(port: port, self.clientConfiguration()) != nil)
            try install("server")
            try box.server?.reloadTLS()
            #expect(await self.connectError(port: port, self.clientConfiguration()) == nil)
            // A broken file keeps the working certificate.
            try Data("not a certificate".utf8).write(to: URL(fileURLWithPath: live + "/cert.pem"))
            #expect(throws: InferWireError.self) { try box.server?.reloadTLS() }
            #expect(await self.connectError(port: port, self.clientConfiguration()) == nil)
        }
    }
}

final class ServerBox: @unchecked Sendable {
    // Written once before the test body runs, read by it.
    var server: InferWireServer?

    @Sendable func store(_ server: InferWireServer) { self.server = server }
}
