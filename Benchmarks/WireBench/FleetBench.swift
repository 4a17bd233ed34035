import ArgumentParser
import Foundation
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireEtcd
import InferWireServer

/// How fast a rollout change made through one replica reaches every replica: three
/// replicas in this process, sharing state in a real etcd on loopback, each with its own
/// server; changes go through the management protocol to a different replica each time.
struct FleetBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "Time until every replica routes by a change made through one (etcd on loopback, 3 replicas).")

    @Option(help: "Rollout changes measured.")
    var changes = 100

    @Option(help: "The etcd binary.")
    var etcd = "/usr/bin/etcd"

    @Option(help: "Throughput: rounds of 1, 2 and 3 replica processes, interleaved (0 skips it).")
    var rounds = 2

    @Option(help: "Throughput: the model loaded (from examples/models).")
    var model = "mlp"

    @Option(help: "Throughput: requests in flight (closed loop).")
    var concurrency = 32

    func run() async throws {
        try await self.measurePropagation()
        if self.rounds > 0 { try await self.measureThroughput() }
    }

    private func measurePropagation() async throws {
        let etcd = try BenchEtcd(binary: self.etcd)
        defer { etcd.remove() }
        var roots: [String] = []
        var stores: [EtcdFleetStore] = []
        var managers: [ModelManager] = []
        for index in 0..<3 {
            let root = try makeFleetRepository()
            roots.append(root)
            let store = EtcdFleetStore(configuration: .init(host: "127.0.0.1", port: etcd.clientPort))
            stores.append(store)
            managers.append(
                ModelManager(
                    repository: ModelRepository(directory: root),
                    configuration: .init(fleet: .init(store: store, replica: "replica-\(index)")),
                    logger: benchLogger))
        }
        defer { for root in roots { try? FileManager.default.removeItem(atPath: root) } }
        do {
            try await etcd.waitUntilReady(stores[0])
            for manager in managers { try await manager.start() }
            try await self.serve(managers, index: 0, ports: [])
        } catch {
            for store in stores { try? await store.shutdown() }
            throw error
        }
        for store in stores { try await store.shutdown() }
    }

    /// Starts a server per manager (nested), then measures.
    private func serve(_ managers: [ModelManager], index: Int, ports: [Int]) async throws {
        guard index < managers.count else { return try await self.measure(managers, ports: ports) }
        let manager = managers[index]
        try await withInProcessServer(
            dispatcher: RequestDispatcher(registry: manager.registry, manager: manager),
            services: [ModelManagerService(manager: manager)]
        ) { port in
            try await self.serve(managers, index: index + 1, ports: ports + [port])
        }
    }

    private func measure(_ managers: [ModelManager], ports: [Int]) async throws {
        var clients: [InferWireClient] = []
        for port in ports { clients.append(try await InferWireClient.connect(host: "127.0.0.1", port: port)) }
        do {
            try await self.measure(managers, clients: clients)
        } catch {
            for client in clients { await client.close() }
            throw error
        }
        for client in clients { await client.close() }
    }

    private func measure(_ managers: [ModelManager], clients: [InferWireClient]) async throws {
        _ = try await clients[0].setTraffic("echo", canary: 2, percent: 1)
        var acknowledged: [Double] = []
        var everywhere: [Double] = []
        let clock = ContinuousClock()
        for change in 0..<self.changes {
            // A different share each time, so each change is visible on its own.
            let percent = change % 2 == 0 ? 2 + change % 50 : 52 + change % 48
            let started = clock.now
            _ = try await clients[change % 3].setTraffic("echo", canary: 2, percent: UInt32(percent))
            acknowledged.append((clock.now - started).milliseconds)
            let bound = started + .seconds(10)
            while !managers.allSatisfy({ $0.registry.snapshot().models["echo"]?.canaryPercent == percent }) {
                guard clock.now < bound else { throw BenchError("change \(change) never reached every replica") }
                try await Task.sleep(for: .microseconds(100))
            }
            everywhere.append((clock.now - started).milliseconds)
        }
        func percentile(_ values: [Double], _ p: Double) -> Double {
            let sorted = values.sorted()
            return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
        }
        print("fleet: \(self.changes) traffic changes, each through the next of 3 replicas, etcd on loopback")
        print(
            String(
                format: "  acknowledged (written to etcd, applied on the replica asked): p50 %.2f ms, p99 %.2f ms",
                percentile(acknowledged, 0.5), percentile(acknowledged, 0.99)))
        print(
            String(
                format:
                    "  routed by every replica:                                      p50 %.2f ms, p99 %.2f ms, max %.2f ms",
                percentile(everywhere, 0.5), percentile(everywhere, 0.99), everywhere.max() ?? 0))
    }
}

extension Duration {
    fileprivate var milliseconds: Double {
        Double(self.components.seconds) * 1000 + Double(self.components.attoseconds) / 1e15
    }
}

extension FleetBench {
    /// Throughput and CPU per request with 1, 2 and 3 `inferwire serve` processes sharing
    /// state in etcd, loaded by `inferwire bench` over all of them; levels interleaved.
    fileprivate func measureThroughput() async throws {
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        let binary = directory + "/inferwire"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw BenchError("no inferwire next to this benchmark (\(binary)); build it in the same configuration")
        }
        let etcd = try BenchEtcd(binary: self.etcd)
        defer { etcd.remove() }
        let probe = EtcdFleetStore(configuration: .init(host: "127.0.0.1", port: etcd.clientPort))
        do {
            try await etcd.waitUntilReady(probe)
        } catch {
            try? await probe.shutdown()
            throw error
        }
        try await probe.shutdown()
        var replicas: [(process: Process, port: Int, root: String)] = []
        defer {
            for replica in replicas {
                if replica.process.isRunning {
                    replica.process.terminate()
                    replica.process.waitUntilExit()
                }
                try? FileManager.default.removeItem(atPath: replica.root)
            }
        }
        for index in 0..<3 {
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-fleet-tp-\(UUID())").path
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "examples/models/\(self.model)", toPath: "\(root)/\(self.model)")
            let port = try freeLoopbackPort()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = [
                "serve", "--repository", root, "--port", "\(port)", "--no-http", "--log-level", "error",
                "--state", "etcd://127.0.0.1:\(etcd.clientPort)/bench", "--replica-name", "replica-\(index)",
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            replicas.append((process, port, root))
        }
        for replica in replicas { try await waitUntilServing(port: replica.port) }

        let csv = FileManager.default.temporaryDirectory.appendingPathComponent("iw-fleet-tp-\(UUID()).csv").path
        defer { try? FileManager.default.removeItem(atPath: csv) }
        var results: [Int: [(rps: Double, serverMs: Double, clientMs: Double)]] = [:]
        for _ in 0..<self.rounds {
            for count in 1...3 {
                let used = replicas.prefix(count)
                let before = used.map { processCPUSeconds($0.process.processIdentifier) }
                let servedBefore = try await served(ports: used.map(\.port))
                let clientBefore = childrenCPUSeconds()
                let bench = Process()
                bench.executableURL = URL(fileURLWithPath: binary)
                // One replica named through DNS, so that every count runs the same balancing
                // generator (one address alone would get the single-connection one).
                let servers =
                    count == 1
                    ? ["--server", "dns:///localhost:\(used[0].port)"]
                    : used.flatMap { ["--server", "127.0.0.1:\($0.port)"] }
                bench.arguments =
                    ["bench"] + servers + [
                        "--model", self.model, "--concurrency", "\(self.concurrency)", "--connections", "2",
                        "--warmup", "1", "--window", "1", "--max-windows", "4", "--quiet", "--csv", csv,
                    ]
                bench.standardOutput = FileHandle.nullDevice
                bench.standardError = FileHandle.nullDevice
                try bench.run()
                bench.waitUntilExit()
                guard bench.terminationStatus == 0 else {
                    throw BenchError("inferwire bench failed with \(count) replicas")
                }
                let serverSeconds = zip(used, before).map { processCPUSeconds($0.process.processIdentifier) - $1 }
                    .reduce(0, +)
                let clientSeconds = childrenCPUSeconds() - clientBefore
                // Every request of the run, warm-up included, as the servers counted them.
                let total = Double(try await served(ports: used.map(\.port)) - servedBefore)
                let row = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n").dropFirst().first
                    .map { $0.split(separator: ",") }
                guard let row, row.count > 5, let rps = Double(row[5]), total > 0 else {
                    throw BenchError("cannot read the bench's CSV")
                }
                results[count, default: []].append(
                    (rps, serverSeconds * 1000 / total, clientSeconds * 1000 / total))
            }
        }
        print(
            "\nthroughput: \(self.model), closed loop, \(self.concurrency) in flight, \(self.rounds) rounds of 1, 2, 3 replicas (interleaved)"
        )
        print("  replicas   req/s (median)   server CPU per request   generator CPU per request")
        for count in 1...3 {
            let runs = results[count] ?? []
            func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
            print(
                String(
                    format: "  %d          %8.0f         %6.1f µs                %6.1f µs", count,
                    median(runs.map(\.rps)),
                    median(runs.map(\.serverMs)) * 1000, median(runs.map(\.clientMs)) * 1000))
        }
        print(
            "  (all processes share this machine's \(ProcessInfo.processInfo.activeProcessorCount) cores: CPU-bound, not scaling)"
        )
    }
}

/// Requests the servers on `ports` have answered by an execution, all models together.
private func served(ports: [Int]) async throws -> UInt64 {
    var total: UInt64 = 0
    for port in ports {
        let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
        let statistics = try await client.modelStatistics()
        await client.close()
        total += statistics.reduce(0) { $0 + $1.requestCount }
    }
    return total
}

/// Waits until an InferWire server answers on `port`.
private func waitUntilServing(port: Int) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    while ContinuousClock.now < deadline {
        if let client = try? await InferWireClient.connect(host: "127.0.0.1", port: port) {
            let ready = (try? await client.serverReady()) ?? false
            await client.close()
            if ready { return }
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw BenchError("the server on port \(port) never became ready")
}

/// User plus system CPU seconds a running process has used (/proc/PID/stat).
private func processCPUSeconds(_ pid: Int32) -> Double {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = text.lastIndex(of: ")")
    else { return 0 }
    // Fields after the command name: state is field 3; utime and stime are fields 14 and 15.
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// CPU seconds of this process's waited-for children.
private func childrenCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_CHILDREN.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// An `echo` identity model with versions 1 to 3.
private func makeFleetRepository() throws -> String {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-fleet-bench-\(UUID())").path
    for version in 1...3 {
        try FileManager.default.createDirectory(atPath: root + "/echo/\(version)", withIntermediateDirectories: true)
    }
    try #"""
    platform: "identity"
    max_batch_size: 16
    input { name: "X" datatype: FP32 shape: [ 4 ] }
    output { name: "Y" datatype: FP32 shape: [ 4 ] }
    version_policy { all { } }
    """#.write(toFile: root + "/echo/config.pbtxt", atomically: true, encoding: .utf8)
    return root
}

/// etcd on free loopback ports with its data in a temporary directory.
private final class BenchEtcd {
    let process = Process()
    let clientPort: Int
    let directory: URL

    init(binary: String) throws {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw BenchError("no etcd at \(binary) (scripts/install-deps installs etcd-server)")
        }
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("iw-etcd-bench-\(UUID())")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        self.clientPort = try freeLoopbackPort()
        let peer = "http://127.0.0.1:\(try freeLoopbackPort())"
        let client = "http://127.0.0.1:\(self.clientPort)"
        self.process.executableURL = URL(fileURLWithPath: binary)
        self.process.arguments = [
            "--name", "bench", "--data-dir", self.directory.path, "--listen-client-urls", client,
            "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "bench=\(peer)", "--log-level", "error",
        ]
        self.process.standardOutput = FileHandle.nullDevice
        self.process.standardError = FileHandle.nullDevice
        try self.process.run()
    }

    func waitUntilReady(_ store: EtcdFleetStore) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            do {
                _ = try await store.load()
                return
            } catch {
                guard ContinuousClock.now < deadline, self.process.isRunning else { throw error }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    func remove() {
        if self.process.isRunning {
            self.process.terminate()
            self.process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: self.directory)
    }
}

/// A free loopback port: bound to 0, read, released.
private func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    guard bound else { throw BenchError("no free loopback port") }
    return Int(UInt16(bigEndian: address.sin_port))
}
