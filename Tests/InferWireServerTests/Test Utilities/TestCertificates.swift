import Foundation

/// Certificates made at test time with the `openssl` command: a CA, server certificates
/// (good, expired, for another host, from another CA) and a client certificate.
struct TestCertificates: Sendable {
    let directory: String

    var caFile: String { self.directory + "/ca.pem" }
    var otherCAFile: String { self.directory + "/other-ca.pem" }
    /// The server certificate for 127.0.0.1 and localhost.
    func certificate(_ name: String) -> String { self.directory + "/\(name).pem" }
    func key(_ name: String) -> String { self.directory + "/\(name).key" }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Makes a fresh set in a new temporary directory.
    static func make() throws -> TestCertificates {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "inferwire-certs-\(UUID().uuidString)"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let set = TestCertificates(directory: directory)
        try set.makeCA("ca", subject: "/CN=InferWire Test CA")
        try set.makeCA("other-ca", subject: "/CN=Another CA")
        let local = "subjectAltName=IP:127.0.0.1,DNS:localhost"
        try set.issue("server", subject: "/CN=server", extensions: local, ca: "ca")
        try set.issue("expired", subject: "/CN=server", extensions: local, ca: "ca", days: -1)
        try set.issue("other-host", subject: "/CN=other", extensions: "subjectAltName=DNS:other.example", ca: "ca")
        try set.issue("wrong-ca", subject: "/CN=server", extensions: local, ca: "other-ca")
        try set.issue(
            "client", subject: "/CN=ci-runner/O=InferWire Tests", extensions: "extendedKeyUsage=clientAuth", ca: "ca")
        try set.issue(
            "stranger", subject: "/CN=stranger", extensions: "extendedKeyUsage=clientAuth", ca: "other-ca")
        return set
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    private func makeCA(_ name: String, subject: String) throws {
        try Self.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self.key(name), "-out", self.certificate(name), "-days", "2", "-subj", subject,
        ])
    }

    private func issue(_ name: String, subject: String, extensions: String, ca: String, days: Int = 2) throws {
        let request = self.directory + "/\(name).csr"
        let extensionFile = self.directory + "/\(name).ext"
        try Data((extensions + "\n").utf8).write(to: URL(fileURLWithPath: extensionFile))
        try Self.openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self.key(name), "-out", request, "-subj", subject,
        ])
        // A negative day count puts notAfter in the past: an expired certificate.
        try Self.openssl([
            "x509", "-req", "-in", request, "-CA", self.certificate(ca), "-CAkey", self.key(ca), "-CAcreateserial",
            "-days", "\(days)", "-extfile", extensionFile, "-out", self.certificate(name),
        ])
    }

    private static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let output = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(
                description:
                    "openssl \(arguments.joined(separator: " ")) failed: \(String(decoding: output, as: UTF8.self))")
        }
    }
}
