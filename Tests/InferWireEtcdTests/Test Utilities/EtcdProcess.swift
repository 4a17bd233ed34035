import Foundation
import Synchronization

@testable import InferWireEtcd

/// A real etcd on loopback, on free ports, its data in a temporary directory. It can be
/// stopped and started again on the same ports and data (etcd going away and coming back);
/// ``remove()`` stops it and deletes its directory.
final class EtcdProcess: Sendable {
    let clientPort: Int
    let peerPort: Int
    let directory: URL
    private let binary: String
    private let process = Mutex<Process?>(nil)

    /// A free loopback port: bound to 0, read, released.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw EtcdError(code: .unavailable, message: "no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Starts etcd.
    init() throws {
        guard let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first(where: FileManager.default.isExecutableFile)
        else {
            throw EtcdError(
                code: .unavailable, message: "etcd is not installed (scripts/install-deps installs etcd-server)")
        }
        self.binary = binary
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("iw-etcd-\(UUID())")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        self.clientPort = try Self.freePort()
        self.peerPort = try Self.freePort()
        try self.start()
    }

    /// Starts etcd (again) on its ports and data.
    func start() throws {
        let peer = "http://127.0.0.1:\(self.peerPort)"
        let client = "http://127.0.0.1:\(self.clientPort)"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: self.binary)
        process.arguments = [
            "--name", "test", "--data-dir", self.directory.path, "--listen-client-urls", client,
            "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "test=\(peer)", "--log-level", "error",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process.withLock { $0 = process }
    }

    var isRunning: Bool { self.process.withLock { $0?.isRunning ?? false } }

    /// Waits until etcd answers reads, up to a bound.
    func ready(_ client: EtcdClient) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            do {
                _ = try await client.get("ready-probe")
                return
            } catch {
                guard ContinuousClock.now < deadline, self.isRunning else { throw error }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// Stops etcd (SIGTERM) and waits for it to exit; its data stays for ``start()``.
    func stop() {
        guard let process = self.process.withLock({ $0 }), process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// Stops etcd and deletes its data.
    func remove() {
        self.stop()
        try? FileManager.default.removeItem(at: self.directory)
    }
}

/// Runs `body` with a fresh etcd and a client of it.
func withEtcd(_ body: (EtcdProcess, EtcdClient) async throws -> Void) async throws {
    let etcd = try EtcdProcess()
    defer { etcd.remove() }
    // A bound far above loopback round trips, so a loaded machine never fails a call.
    let client = EtcdClient(
        configuration: .init(host: "127.0.0.1", port: etcd.clientPort, requestTimeout: .seconds(15)))
    do {
        try await etcd.ready(client)
        try await body(etcd, client)
    } catch {
        try? await client.shutdown()
        throw error
    }
    try await client.shutdown()
}
