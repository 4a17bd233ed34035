import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Containers run the server as an unprivileged user with every capability dropped: socket
/// options only root may set (SO_DEBUG, say, where TCP_NODELAY was meant) must not creep in.
@Suite("Running without privileges", .timeLimit(.minutes(2)))
struct UnprivilegedTests {
    /// Runs `arguments` of the `binary` as `nobody` when this process is root (as itself
    /// otherwise).
    static func unprivileged(_ binary: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        if getuid() == 0 {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", "--", binary] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
        }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) + getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test("an unprivileged server answers an unprivileged client")
    func serveAndCall() async throws {
        // The checkout may sit where `nobody` cannot reach (a 0700 temporary directory): the
        // binary and a repository go to a directory anyone may read.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("iw-unprivileged-\(UUID())").path
        try FileManager.default.createDirectory(
            atPath: directory + "/models", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory)
        let binary = directory + "/inferwire"
        try FileManager.default.copyItem(atPath: packageRoot + "/.build/debug/inferwire", toPath: binary)
        try FileManager.default.copyItem(
            atPath: packageRoot + "/examples/models/add_sub", toPath: directory + "/models/add_sub")
        let port = Self.freePort()
        let server = try Self.unprivileged(
            binary,
            [
                "serve", "--repository", directory + "/models", "--port", "\(port)", "--no-http", "--no-management",
                "--log-level", "error",
            ])
        defer {
            server.terminate()
            server.waitUntilExit()
        }
        // Until the server listens (a bounded number of tries), then the answer must come.
        var status: Int32 = -1
        for _ in 0..<600 where server.isRunning {
            let call = try Self.unprivileged(
                binary,
                [
                    "infer", "--server", "127.0.0.1:\(port)", "--model", "add_sub", "--input", "INPUT0=[[1,2,3,4]]",
                    "--input", "INPUT1=[[1,1,1,1]]",
                ])
            call.waitUntilExit()
            status = call.terminationStatus
            if status == 0 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(server.isRunning, "the unprivileged server exited")
        #expect(status == 0, "the unprivileged client's call failed")
    }
}
