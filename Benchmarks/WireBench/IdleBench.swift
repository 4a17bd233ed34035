import ArgumentParser
import Foundation
import InferWireBench
import InferWireClient
import InferWireCore
import InferWireProto

#if canImport(Glibc)
    import Glibc
#endif

/// A release server in a process of its own, so that its memory and CPU are its own.
final class ServerProcess {
    let process = Process()
    let port: Int
    let logPath: String

    init(executable: String, arguments: [String], prefix: [String] = [], logPath: String) throws {
        self.logPath = logPath
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        if prefix.isEmpty {
            self.process.executableURL = URL(fileURLWithPath: executable)
            self.process.arguments = arguments
        } else {
            self.process.executableURL = URL(fileURLWithPath: prefix[0])
            self.process.arguments = Array(prefix.dropFirst()) + [executable] + arguments
        }
        self.process.standardError = log
        self.process.standardOutput = log
        try self.process.run()
        var port: Int?
        for _ in 0..<200 where port == nil {
            let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            if let range = text.range(of: #"listening on 127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(text[range].split(separator: ":").last ?? "")
            }
            if port == nil { usleep(50_000) }
        }
        guard let port else {
            self.process.terminate()
            throw BenchError(
                "the server did not start: \((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")")
        }
        self.port = port
    }

    var pid: Int32 { self.process.processIdentifier }

    /// Resident memory in bytes.
    var residentBytes: Double {
        guard let status = try? String(contentsOfFile: "/proc/\(self.pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return 0 }
        return (Double(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    /// User plus system CPU seconds so far.
    var cpuSeconds: Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(self.pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // Fields 14 and 15 of stat (utime, stime), counted from after the command name.
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    var log: String { (try? String(contentsOfFile: self.logPath, encoding: .utf8)) ?? "" }

    func stop() {
        self.process.interrupt()
        self.process.waitUntilExit()
    }
}

/// Thousands of idle authenticated connections next to normal traffic: the traffic's p99
/// with and without them, the server's memory per idle connection, and the same with the
/// server's open-file limit below the connection count.
struct IdleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle",
        abstract:
            "Idle authenticated connections: their effect on normal traffic, memory each, behaviour past the file limit."
    )

    @Option(help: "The release server binary.")
    var server = ".build/release/inferwire"

    @Option(help: "Model repository holding the identity model.")
    var repository = "examples/models"

    @Option(help: "Idle connections to hold open.")
    var idle = 10_000

    @Option(help: "Rounds of (without, with) idle connections.")
    var rounds = 3

    @Option(help: "Seconds of normal traffic per measurement.")
    var seconds = 3.0

    @Option(help: "Normal traffic: requests in flight on one connection.")
    var concurrency = 8

    @Option(help: "The server's open-file limit for the second part.")
    var fileLimit = 1024

    func run() async throws {
        let credentials = try BenchCredentials()
        defer { credentials.remove() }
        try await self.idleConnections(credentials)
        try await self.pastTheFileLimit(credentials)
    }

    func idleConnections(_ credentials: BenchCredentials) async throws {
        let server = try ServerProcess(
            executable: self.server,
            arguments: [
                "serve", "--repository", self.repository, "--port", "0", "--http-port", "0", "--token-file",
                credentials.tokenFile,
                "--max-connections", "\(self.idle + 1000)", "--max-connections-per-address", "\(self.idle + 1000)",
            ], logPath: credentials.directory + "/server.log")
        defer { server.stop() }
        let security = try ConnectionSecurity(bearerToken: credentials.token)
        var request = Inferwire_V1_InferRequest()
        request.modelName = "identity"
        request.inputs = [Tensor(name: "INPUT0", values: (0..<16).map { Float($0) }, shape: [1, 16]).wire]
        let traffic = try await LoadGenerator.connect(
            servers: [("127.0.0.1", server.port)], connectionsPerServer: 1, request: request, compression: false,
            security: security)
        print(
            "Idle connections: \(self.idle) authenticated, idle connections to one release server, next to \(self.concurrency) requests in flight on identity"
        )
        print("\(self.rounds) rounds, \(self.seconds) s of traffic per measurement\n")
        var quiet: [(p50: Double, p99: Double, rate: Double)] = []
        var loaded: [(p50: Double, p99: Double, rate: Double)] = []
        var perConnection: [Double] = []
        var openSeconds: [Double] = []
        // Warm-up, not counted: the first measurement otherwise pays for cold caches.
        _ = try await WireBench.generatorLevel(traffic, concurrency: self.concurrency, seconds: self.seconds)
        for _ in 0..<self.rounds {
            let before = try await WireBench.generatorLevel(
                traffic, concurrency: self.concurrency, seconds: self.seconds)
            quiet.append((before.latency.p50, before.latency.p99, before.throughput))
            let residentBefore = server.residentBytes
            let start = ContinuousClock.now
            let idle = try await LoadGenerator.connect(
                servers: [("127.0.0.1", server.port)], connectionsPerServer: self.idle, request: request,
                compression: false, security: security)
            openSeconds.append((ContinuousClock.now - start).inSeconds)
            let during = try await WireBench.generatorLevel(
                traffic, concurrency: self.concurrency, seconds: self.seconds)
            loaded.append((during.latency.p50, during.latency.p99, during.throughput))
            perConnection.append((server.residentBytes - residentBefore) / Double(self.idle))
            await idle.close()
        }
        await traffic.close()
        func show(_ name: String, _ rows: [(p50: Double, p99: Double, rate: Double)]) {
            print(
                name.padding(toLength: 30, withPad: " ", startingAt: 0)
                    + String(
                        format: "%8.1f %8.1f %10.0f", median(rows.map(\.p50)), median(rows.map(\.p99)),
                        median(rows.map(\.rate))))
        }
        print("traffic".padding(toLength: 30, withPad: " ", startingAt: 0) + "  p50 µs   p99 µs      req/s")
        show("alone", quiet)
        show("with \(self.idle) idle connections", loaded)
        let ratios = zip(loaded, quiet).map { $0.p99 / $1.p99 }
        print(
            String(
                format: "\np99 with / without: %.2f× (per round: %@)", median(ratios),
                ratios.map { String(format: "%.2f", $0) }.joined(separator: " ")))
        // Later rounds reuse the memory the first one's connections left to the allocator.
        print(
            String(
                format: "server memory per idle authenticated connection: %.1f KiB (resident growth over the first %d)",
                perConnection[0] / 1024, self.idle))
        print(
            String(format: "opening %d connections (handshake and AUTH each): %.2f s", self.idle, median(openSeconds)))
    }

    /// The server under an open-file limit below the number of clients: refused clients are
    /// told why, the server does not spin, says so once, and serves again when places free up.
    func pastTheFileLimit(_ credentials: BenchCredentials) async throws {
        let server = try ServerProcess(
            executable: self.server,
            arguments: [
                "serve", "--repository", self.repository, "--port", "0", "--http-port", "0", "--token-file",
                credentials.tokenFile,
                "--max-connections-per-address", "100000",
            ], prefix: ["/usr/bin/prlimit", "--nofile=\(self.fileLimit):\(self.fileLimit)", "--"],
            logPath: credentials.directory + "/limited.log")
        defer { server.stop() }
        let attempts = self.fileLimit + self.fileLimit / 2
        print("\nOpen-file limit \(self.fileLimit) on the server, \(attempts) clients connecting")
        var clients: [InferWireClient] = []
        var refusals: [String: Int] = [:]
        let cpuBefore = server.cpuSeconds
        let start = ContinuousClock.now
        for _ in 0..<attempts {
            do {
                clients.append(
                    try await InferWireClient.connect(
                        host: "127.0.0.1", port: server.port, configuration: .init(bearerToken: credentials.token)))
            } catch let error as InferWireError {
                refusals["\(error.code): \(error.message)", default: 0] += 1
            }
        }
        let connecting = (ContinuousClock.now - start).inSeconds
        let cpuConnecting = server.cpuSeconds - cpuBefore
        // Held open and idle: a server that spins on accept burns CPU here.
        let cpuHeld = server.cpuSeconds
        try await Task.sleep(for: .seconds(2))
        let spinning = server.cpuSeconds - cpuHeld
        print("served \(clients.count), refused \(refusals.values.reduce(0, +)):")
        for (reason, count) in refusals.sorted(by: { $0.value > $1.value }) { print("  \(count) × \(reason)") }
        print(
            String(
                format: "server CPU: %.2f s while %d clients connected in %.2f s; %.3f s in the next 2 s with all held",
                cpuConnecting, attempts, connecting, spinning))
        let lines = server.log.split(separator: "\n").filter {
            $0.contains("serving at most") || $0.contains("refusing a connection") || $0.contains("more like it")
        }
        print("server log lines about it: \(lines.count)")
        for line in lines.prefix(3) { print("  \(line.prefix(200))") }
        for client in clients.prefix(clients.count / 2) { await client.close() }
        let recovered = try await InferWireClient.connect(
            host: "127.0.0.1", port: server.port, configuration: .init(bearerToken: credentials.token))
        print("after half of them closed, a new client connects: \(try await recovered.serverLive() ? "yes" : "no")")
        await recovered.close()
        for client in clients.dropFirst(clients.count / 2) { await client.close() }
    }
}
