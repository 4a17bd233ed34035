import Foundation
import InferWireClient
import InferWireCore
import Synchronization
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

let packageRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .path

/// One `inferwire serve` process of a fleet sharing state in etcd, on fixed free loopback
/// ports so that it can be stopped and started again where clients expect it.
final class ServeProcess: Sendable {
    let name: String
    let repository: String
    let port: Int
    let httpPort: Int
    let state: String
    private let process = Mutex<Process?>(nil)
    let log: String

    init(name: String, repository: String, etcdPort: Int, prefix: String = "/inferwire") throws {
        self.name = name
        self.repository = repository
        self.port = try EtcdProcess.freePort()
        self.httpPort = try EtcdProcess.freePort()
        self.state = "etcd://127.0.0.1:\(etcdPort)\(prefix)"
        self.log = FileManager.default.temporaryDirectory.appendingPathComponent("iw-serve-\(name)-\(UUID()).log").path
    }

    static var binary: String { packageRoot + "/.build/debug/inferwire" }

    /// Starts the process and waits until it answers on its port.
    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = [
            "serve", "--repository", self.repository, "--port", "\(self.port)", "--http-port", "\(self.httpPort)",
            "--state", self.state, "--replica-name", self.name, "--shutdown-timeout", "10", "--log-level", "warning",
        ]
        FileManager.default.createFile(atPath: self.log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: self.log))
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        self.process.withLock { $0 = process }
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            if let client = try? await InferWireClient.connect(host: "127.0.0.1", port: self.port) {
                let ready = (try? await client.serverReady()) ?? false
                await client.close()
                if ready { return }
            }
            guard process.isRunning else {
                throw InferWireError(code: .unavailable, message: "\(self.name) exited: \(self.logTail())")
            }
            guard ContinuousClock.now < deadline else {
                throw InferWireError(code: .deadlineExceeded, message: "\(self.name) never became ready")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// SIGTERM (graceful drain), then waits for the exit; returns the exit status.
    @discardableResult
    func terminate() -> Int32 {
        self.signal(SIGTERM)
    }

    /// SIGKILL, then waits for the exit.
    func kill() {
        self.signal(SIGKILL)
    }

    /// SIGSTOP: the process holds every connection open and answers nothing.
    func pause() {
        guard let process = self.process.withLock({ $0 }), process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGSTOP)
    }

    private func signal(_ signal: Int32) -> Int32 {
        guard let process = self.process.withLock({ $0 }), process.isRunning else { return 0 }
        Foundation.kill(process.processIdentifier, signal)
        process.waitUntilExit()
        return process.terminationStatus
    }

    func logTail() -> String {
        let text = (try? String(contentsOfFile: self.log, encoding: .utf8)) ?? ""
        return String(text.suffix(2000))
    }

    /// The body of GET /health/ready.
    func readiness() async throws -> String {
        try await self.get("/health/ready")
    }

    /// The value of an unlabelled metric in GET /metrics, if present.
    func metric(_ name: String) async throws -> Double? {
        let text = try await self.get("/metrics")
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1))
        }
        return nil
    }

    private func get(_ path: String) async throws -> String {
        let (data, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(self.httpPort)\(path)")!)
        return String(decoding: data, as: UTF8.self)
    }

    func remove() {
        self.kill()
        try? FileManager.default.removeItem(atPath: self.log)
    }
}

/// Requests sent by load workers until stopped, and what came back.
final class LoadTally: Sendable {
    let stop = Atomic<Bool>(false)
    private let counts = Mutex<(ok: Int, failed: Int, errors: [String])>((0, 0, []))

    var ok: Int { self.counts.withLock { $0.ok } }
    var failed: Int { self.counts.withLock { $0.failed } }
    var errors: [String] { self.counts.withLock { $0.errors } }

    func record(_ result: Result<InferResult, any Error>) {
        self.counts.withLock { counts in
            switch result {
            case .success: counts.ok += 1
            case .failure(let error):
                counts.failed += 1
                if counts.errors.count < 10 { counts.errors.append("\(error)") }
            }
        }
    }
}

/// Sends `echo` requests from `workers` tasks through `send` while `body` runs, then stops
/// them and waits for their last requests.
func withLoad(
    workers: Int, tally: LoadTally, send: @escaping @Sendable (Tensor) async throws -> InferResult,
    _ body: () async throws -> Void
) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<workers {
            group.addTask {
                let input = Tensor(name: "X", values: [1, 2, 3, 4] as [Float], shape: [1, 4])
                while !tally.stop.load(ordering: .relaxed) {
                    do { tally.record(.success(try await send(input))) } catch { tally.record(.failure(error)) }
                }
            }
        }
        // Load is flowing before the body acts.
        while tally.ok < workers * 5 && tally.failed == 0 { try await Task.sleep(for: .milliseconds(5)) }
        do {
            try await body()
        } catch {
            tally.stop.store(true, ordering: .relaxed)
            throw error
        }
        tally.stop.store(true, ordering: .relaxed)
        try await group.waitForAll()
    }
}
