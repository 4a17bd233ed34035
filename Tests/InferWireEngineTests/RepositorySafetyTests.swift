import Foundation
import InferWireCore
import InferWireEngine
import InferWireProto
import Logging
import Testing

/// What a management caller can make the repository touch, and what it is told.
@Suite("Repository safety")
struct RepositorySafetyTests {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A repository with `add_sub` (version 1) beside a directory outside it that holds a
    /// valid-looking model.
    func fixture() throws -> (root: String, repository: String) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-safety-\(UUID().uuidString)").path
        let repository = root + "/models"
        try FileManager.default.createDirectory(atPath: repository + "/add_sub/1", withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: packageRoot + "/examples/models/add_sub/config.pbtxt", toPath: repository + "/add_sub/config.pbtxt")
        try FileManager.default.createDirectory(atPath: root + "/outside/1", withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: packageRoot + "/examples/models/add_sub/config.pbtxt", toPath: root + "/outside/config.pbtxt")
        return (root, repository)
    }

    @Test(
        "model names are one path component: traversal, separators and odd characters are refused",
        arguments: [
            "../outside", "..", ".hidden", "a/b", "/etc", "", "-dash", "name with space", "tab\tname",
            String(repeating: "x", count: 129),
        ])
    func badNames(_ name: String) {
        #expect(throws: InferWireError.self) { try ModelRepository.validate(modelName: name) }
        do {
            try ModelRepository.validate(modelName: name)
        } catch {
            #expect(error.code == .invalidArgument)
        }
    }

    @Test("names of letters, digits, '_', '-' and '.' up to 128 characters are accepted")
    func goodNames() throws {
        for name in ["add_sub", "fraud", "resnet-18", "model.v2", "A1", String(repeating: "x", count: 128)] {
            try ModelRepository.validate(modelName: name)
        }
    }

    @Test("LOAD of a name outside the repository is refused without reading it, and no path is disclosed")
    func traversal() async throws {
        let (root, repository) = try self.fixture()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let manager = ModelManager(repository: ModelRepository(directory: repository), logger: self.logger)
        try await manager.start()
        do {
            _ = try await manager.load("../outside", version: 1)
            Issue.record("a model outside the repository was loaded")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(!error.message.contains(root))
        }
        #expect(manager.list().map(\.name) == ["add_sub"])
    }

    @Test("versions below 1, and versions with no directory, are refused for built-in platforms too, changing nothing")
    func versions() async throws {
        let (root, repository) = try self.fixture()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let manager = ModelManager(repository: ModelRepository(directory: repository), logger: self.logger)
        try await manager.start()
        for (version, code) in [
            (Int64(0), InferWireError.Code.invalidArgument), (-1, .invalidArgument), (7, .notFound),
        ] {
            do {
                _ = try await manager.load("add_sub", version: version)
                Issue.record("add_sub version \(version) was loaded")
            } catch {
                #expect(error.code == code, "version \(version)")
                #expect(!error.message.contains(root))
            }
        }
        let status = try manager.status("add_sub")
        #expect(status.versions.map(\.version) == [1])
        #expect(try manager.history("add_sub").allSatisfy { $0.action != "failed-load" })
    }

    @Test("load failures reported to clients name files relative to the repository")
    func messages() async throws {
        let (root, repository) = try self.fixture()
        defer { try? FileManager.default.removeItem(atPath: root) }
        // A model with a broken config and one with no version directory.
        try FileManager.default.createDirectory(atPath: repository + "/broken/1", withIntermediateDirectories: true)
        try "this is not a config".write(toFile: repository + "/broken/config.pbtxt", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: repository + "/empty", withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: repository + "/add_sub/config.pbtxt", toPath: repository + "/empty/config.pbtxt")
        let contents = try ModelRepository(directory: repository).loadAll(logger: self.logger)
        #expect(Set(contents.failures.map(\.model)) == ["broken", "empty"])
        for failure in contents.failures {
            #expect(!failure.reason.contains(root), "\(failure.reason)")
        }
        let manager = ModelManager(repository: ModelRepository(directory: repository), logger: self.logger)
        do {
            _ = try await manager.load("missing", version: 1)
            Issue.record("a missing model was loaded")
        } catch {
            #expect(error.code == .notFound)
            #expect(!error.message.contains(root))
        }
    }
}
