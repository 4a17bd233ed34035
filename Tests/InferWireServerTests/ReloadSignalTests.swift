import Foundation
import InferWireAuth
import InferWireCore
import Testing

@testable import InferWireClient

#if canImport(Glibc)
    import Glibc
#endif

@Suite("SIGHUP reload", .timeLimit(.minutes(1)))
struct ReloadSignalTests {
    @Test("SIGHUP rereads the token file and the TLS certificate; a broken file keeps the previous ones")
    func sighup() async throws {
        let binary = packageRoot + "/.build/debug/inferwire"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            Issue.record("needs \(binary) (swift build)")
            return
        }
        let certificates = try testCertificates.get()
        let directory = certificates.directory + "/sighup-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func write(_ text: String, to name: String) throws {
            try Data(text.utf8).write(to: URL(fileURLWithPath: directory + "/" + name))
        }
        func install(_ certificate: String) throws {
            for (source, target) in [
                (certificates.certificate(certificate), "cert.pem"), (certificates.key(certificate), "key.pem"),
            ] {
                try? FileManager.default.removeItem(atPath: directory + "/" + target)
                try FileManager.default.copyItem(atPath: source, toPath: directory + "/" + target)
            }
        }
        try write("token \(TokenFile.digest(of: "first-token")) first infer\n", to: "tokens")
        try install("wrong-ca")

        let server = try LoggedProcess(
            binary,
            [
                "serve", "--repository", packageRoot + "/examples/models", "--port", "0", "--http-port", "0",
                "--token-file", directory + "/tokens", "--tls-cert", directory + "/cert.pem", "--tls-key",
                directory + "/key.pem",
            ])
        defer { server.stop() }
        let (process, lines) = (server.process, server.lines)
        let port = try #require(lines.number(after: "listening on 127.0.0.1:"))
        func connect(_ token: String) async throws -> InferWireClient {
            try await InferWireClient.connect(
                host: "127.0.0.1", port: port,
                configuration: .init(tls: .init(caFile: certificates.caFile), bearerToken: token))
        }
        // Signals are trapped from this line on; before it, SIGHUP would end the process.
        #expect(lines.contains("SIGHUP rereads"))
        // The certificate in place is from a CA the client does not trust.
        await #expect(throws: InferWireError.self) { try await connect("first-token") }

        try install("server")
        try write("token \(TokenFile.digest(of: "second-token")) second infer\n", to: "tokens")
        kill(process.processIdentifier, SIGHUP)
        #expect(lines.contains("SIGHUP: reloaded"))
        let second = try await connect("second-token")
        #expect(second.principal?.name == "second")
        await second.close()
        do {
            _ = try await connect("first-token")
            Issue.record("a token removed from the file still authenticates")
        } catch let error as InferWireError {
            #expect(error.code == .unauthenticated)
        }

        try write("not a token file\n", to: "tokens")
        kill(process.processIdentifier, SIGHUP)
        #expect(lines.contains("SIGHUP: kept the previous files"))
        let again = try await connect("second-token")
        #expect(try await again.serverLive())
        await again.close()
    }
}
