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

    /// A free loopback port for a process that may stop and start again on it, below the
    /// kernel's ephemeral range: while the process is down, no connection or port-0 listener
    /// elsewhere (other suites run meanwhile) can be given that port.
    static func freePort() throws -> Int {
        let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))?
            .split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        let below = range?.first ?? 32768
        guard below > 12000 else { return try Self.boundPort(0) }
        for _ in 0..<1000 {
            if let port = try? Self.boundPort(Int.random(in: 10000..<below)) { return port }
        }
        throw EtcdError(code: .unavailable, message: "no free port below \(below)")
    }

    /// Binds a loopback socket to `port` (0: any), reads the port, releases it.
    private static func boundPort(_ port: Int) throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw EtcdError(code: .unavailable, message: "port \(port) is taken") }
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

    /// Starts etcd again and waits until it answers (or says why it does not).
    func restart() async throws {
        try self.start()
        let client = EtcdClient(configuration: .init(host: "127.0.0.1", port: self.clientPort))
        do {
            try await self.ready(client)
        } catch {
            try? await client.shutdown()
            throw EtcdError(
                code: .unavailable,
                message: "etcd did not come back on port \(self.clientPort) (running: \(self.isRunning)): \(error)")
        }
        try await client.shutdown()
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
