import Foundation
import InferWireProto
import InferWireWire
import Testing

@testable import InferWireServer

#if canImport(Glibc)
    import Glibc
#endif

@Suite("The open-file limit", .timeLimit(.minutes(1)))
struct OpenFileLimitTests {
    @Test(
        "the connection ceiling leaves the descriptors in use and a margin (an eighth, at most 64) for everything else")
    func ceiling() {
        #expect(OpenFileLimit.connectionCeiling(openFiles: 64, inUse: 18) == 38)
        #expect(OpenFileLimit.connectionCeiling(openFiles: 1024, inUse: 20) == 940)
        #expect(OpenFileLimit.connectionCeiling(openFiles: 1_048_576, inUse: 20) == 1_048_492)
        #expect(OpenFileLimit.connectionCeiling(openFiles: 8, inUse: 20) == 1)
        #expect(OpenFileLimit.connectionCeiling(openFiles: Int.max, inUse: 20) == Int.max)
        #expect((OpenFileLimit.openDescriptors() ?? 0) >= 3)
    }

    /// A blocking TCP connection that sends the preface and reads the first frame back.
    struct Probe {
        let fd: Int32

        init(port: Int) throws {
            self.fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            // Generous: a loaded machine may answer slowly; a server that cannot accept never does.
            var timeout = timeval(tv_sec: 20, tv_usec: 0)
            setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(self.fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
            let preface: [UInt8] = Preface.magic + [0, 1, 0, 1]
            _ = preface.withUnsafeBytes { send(self.fd, $0.baseAddress, $0.count, 0) }
        }

        /// The first frame's type and payload, or nil when the connection ended first.
        func firstFrame() -> (FrameType, [UInt8])? {
            var header = [UInt8](repeating: 0, count: FrameHeader.size)
            guard self.read(&header) else { return nil }
            let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
            var payload = [UInt8](repeating: 0, count: length)
            guard self.read(&payload) else { return nil }
            return (FrameType(rawValue: header[4]), payload)
        }

        private func read(_ buffer: inout [UInt8]) -> Bool {
            var got = 0
            while got < buffer.count {
                let n = buffer.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress! + got, $0.count - got, 0) }
                guard n > 0 else { return false }
                got += n
            }
            return true
        }

        func close() { _ = Glibc.close(self.fd) }
    }

    /// CPU seconds a process has used (user + system).
    func cpuSeconds(_ pid: Int32) throws -> Double {
        let fields = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8).split(separator: ")").last!
            .split(separator: " ")
        // After the command name: state is field 0, utime field 11, stime field 12.
        return (Double(fields[11])! + Double(fields[12])!) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    @Test(
        "with the open-file limit below the connections asked for: no spinning, refusals that say why, a log line, recovery"
    )
    func belowTheLimit() async throws {
        let binary = packageRoot + "/.build/debug/inferwire"
        guard FileManager.default.isExecutableFile(atPath: binary),
            FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit")
        else {
            Issue.record("needs \(binary) (swift build) and /usr/bin/prlimit")
            return
        }
        let repository = FileManager.default.temporaryDirectory.appendingPathComponent("iw-nofile-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: repository + "/identity/1", withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: packageRoot + "/examples/models/identity/config.pbtxt",
            toPath: repository + "/identity/config.pbtxt")
        defer { try? FileManager.default.removeItem(atPath: repository) }

        let server = try LoggedProcess(
            "/usr/bin/prlimit",
            ["--nofile=64:64", binary, "serve", "--repository", repository, "--port", "0", "--http-port", "0"])
        defer { server.stop() }
        let (process, lines) = (server.process, server.lines)
        // The port from the log's "listening on" line.
        let port = try #require(lines.number(after: "listening on 127.0.0.1:"))
        // The ceiling the server chose below its open-file limit, from its log.
        let ceiling = try #require(lines.number(after: "serving at most "))
        #expect(ceiling > 10 && ceiling < 64)

        var probes: [Probe] = []
        defer { for probe in probes { probe.close() } }
        var hellos = 0
        var refusals: [String] = []
        for _ in 0..<100 {
            let probe = try Probe(port: port)
            // A connection that gets no frame at all means the server can no longer accept.
            guard let (type, payload) = probe.firstFrame() else {
                Issue.record("a connection got neither HELLO nor GOAWAY")
                probe.close()
                break
            }
            if type == .hello {
                hellos += 1
                probes.append(probe)
            } else if type == .goAway {
                refusals.append(try Inferwire_V1_GoAway(serializedBytes: payload).message)
                probe.close()
            }
        }
        #expect(hellos == ceiling)
        #expect(refusals.count == 100 - ceiling)
        #expect(refusals.allSatisfy { $0.contains("too many connections to this server (limit \(ceiling))") })
        // Held connections, and refused ones, cost no CPU: nothing spins.
        let before = try self.cpuSeconds(process.processIdentifier)
        try await Task.sleep(for: .seconds(1))
        let used = try self.cpuSeconds(process.processIdentifier) - before
        #expect(used < 0.3, "the server used \(used) s of CPU in 1 s while at its limit")
        #expect(lines.contains("serving at most \(ceiling) connections, not 16384: the open-file limit is 64"))
        #expect(lines.contains("refusing a connection from 127.0.0.1"))
        // Places freed are served again.
        for probe in probes { probe.close() }
        probes = []
        var served = false
        let deadline = ContinuousClock.now + .seconds(30)
        while !served, ContinuousClock.now < deadline {
            let probe = try Probe(port: port)
            served = probe.firstFrame()?.0 == .hello
            probe.close()
        }
        #expect(served)
    }
}

/// Collects a process's log lines as they arrive.
final class LogLines: @unchecked Sendable {
    private let condition = NSCondition()
    private var lines: [String] = []
    private var partial = ""

    init(_ handle: FileHandle) {
        handle.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.condition.lock()
            self.partial += String(decoding: data, as: UTF8.self)
            while let newline = self.partial.firstIndex(of: "\n") {
                self.lines.append(String(self.partial[..<newline]))
                self.partial = String(self.partial[self.partial.index(after: newline)...])
            }
            self.condition.broadcast()
            self.condition.unlock()
        }
    }

    /// The first value `match` finds in a line, waiting up to 30 s for it.
    func waitFor<T>(_ match: (String) -> T?) -> T? {
        let deadline = Date().addingTimeInterval(30)
        self.condition.lock()
        defer { self.condition.unlock() }
        while true {
            if let found = self.lines.lazy.compactMap(match).first { return found }
            guard self.condition.wait(until: deadline) else { return nil }
        }
    }

    func contains(_ text: String) -> Bool {
        self.waitFor { $0.contains(text) ? true : nil } ?? false
    }

    /// The number right after `marker` in the first line holding it (a port, a count),
    /// waiting for it as ``waitFor(_:)`` does.
    func number(after marker: String) -> Int? {
        self.waitFor { line in line.range(of: marker).map { Int(line[$0.upperBound...].prefix { $0.isNumber }) } ?? nil
        }
    }
}

/// A command whose standard error is read as log lines; ``stop()`` ends it.
struct LoggedProcess {
    let process: Process
    let lines: LogLines

    init(_ executable: String, _ arguments: [String]) throws {
        self.process = Process()
        self.process.executableURL = URL(fileURLWithPath: executable)
        self.process.arguments = arguments
        let log = Pipe()
        self.process.standardError = log
        self.process.standardOutput = FileHandle.nullDevice
        try self.process.run()
        self.lines = LogLines(log.fileHandleForReading)
    }

    func stop() {
        self.process.terminate()
        self.process.waitUntilExit()
    }
}
