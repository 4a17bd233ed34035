import Foundation
import InferWireAuth
import InferWireCore
import InferWireEngine
import InferWireServer
import Testing

@testable import InferWireClient

@Suite("Reconnection", .timeLimit(.minutes(1)))
struct ReconnectionTests {
    /// Waits, up to a bound, until the server has ended the client's idle connection.
    func waitForIdleClose(_ client: InferWireClient) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while client.isConnectionOpen {
            guard ContinuousClock.now < deadline else {
                Issue.record("the server never closed the idle connection")
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test("after the server closes an idle connection, the next calls open one new connection and succeed")
    func idleConnection() async throws {
        try await withServer(limits: .init(idleTimeout: .milliseconds(200))) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            #expect(try await client.serverLive())
            try await self.waitForIdleClose(client)
            // Many callers at once: one reconnection serves them all.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        let result = try await client.infer(
                            model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [1, 1, 1, 1]))
                        #expect(result["OUTPUT0"]?.values(as: Float.self) == [2, 3, 4, 5])
                    }
                }
                try await group.waitForAll()
            }
            #expect(client.connectionsOpened == 2)
            #expect(client.isConnectionOpen)
            await client.close()
        }
    }

    @Test("a reconnection presents the same credentials over TLS again")
    func reconnectsWithCredentials() async throws {
        let certificates = try testCertificates.get()
        let file = certificates.directory + "/reconnect-tokens"
        try Data("token \(TokenFile.digest(of: "reconnect-token")) svc infer\n".utf8).write(
            to: URL(fileURLWithPath: file))
        let authenticator = try await Authenticator(configuration: .init(tokenFile: file))
        try await withServer(
            dispatcher: RequestDispatcher(registry: try makeRegistry()),
            // Long enough that a TLS handshake and AUTH on a loaded machine never look idle.
            limits: .init(idleTimeout: .seconds(1)),
            tls: .init(
                certificateChainPath: certificates.certificate("server"), privateKeyPath: certificates.key("server")),
            authenticator: authenticator
        ) { port in
            let client = try await InferWireClient.connect(
                host: "127.0.0.1", port: port,
                configuration: .init(tls: .init(caFile: certificates.caFile), bearerToken: "reconnect-token"))
            #expect(client.principal?.name == "svc")
            try await self.waitForIdleClose(client)
            _ = try await client.infer(model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [1, 1, 1, 1]))
            #expect(client.connectionsOpened == 2)
            #expect(client.principal?.name == "svc")
            await client.close()
        }
    }

    @Test("while the server is down calls fail UNAVAILABLE; once it is back on its port they succeed")
    func serverRestart() async throws {
        let registry = try makeRegistry()
        let client = try await withServer(dispatcher: RequestDispatcher(registry: registry)) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            #expect(try await client.serverLive())
            return client
        }
        // The server shut down gracefully: GOAWAY, then close.
        let port = client.port
        do {
            _ = try await client.serverLive()
            Issue.record("a call succeeded with the server down")
        } catch let error as InferWireError {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("cannot connect to 127.0.0.1:\(port)"), "\(error.message)")
        }
        let live = try await withServer(dispatcher: RequestDispatcher(registry: registry), port: port) { _ in
            try await client.serverLive()
        }
        #expect(live)
        await client.close()
    }

    @Test("after close, calls fail and nothing reconnects")
    func closed() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            await client.close()
            do {
                _ = try await client.serverLive()
                Issue.record("a closed client called")
            } catch let error as InferWireError {
                #expect(error.message.contains("the client is closed"))
            }
            #expect(client.connectionsOpened == 1)
        }
    }
}
