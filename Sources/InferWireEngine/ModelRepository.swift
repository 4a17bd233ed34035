import Foundation
public import InferWireCore
public import InferWireProto
public import Logging

/// One version of a model, loaded and ready to execute, with the queue and execution
/// instances that run it.
public final class LoadedModel: Sendable {
    public let name: String
    public let version: Int64
    public let config: Inferwire_V1_ModelConfig
    public let model: any InferenceModel
    public var signature: ModelSignature { self.model.signature }
    /// The version's queue, batcher and instance threads.
    public let scheduler: ModelScheduler
    /// How long its loader took to read and prepare it.
    public let loadDuration: Duration

    /// - Parameters:
    ///   - inPlaceExecutionLimit: how short single-row runs must be to run a lone request on
    ///     the I/O thread (``ModelScheduler/inPlaceExecutionLimit``).
    ///   - loadDuration: how long loading took, for metrics.
    public init(
        name: String, version: Int64, config: Inferwire_V1_ModelConfig, model: any InferenceModel,
        inPlaceExecutionLimit: Duration = ModelScheduler.defaultInPlaceExecutionLimit, loadDuration: Duration = .zero
    ) {
        self.name = name
        self.version = version
        self.config = config
        self.model = model
        self.loadDuration = loadDuration
        self.scheduler = ModelScheduler(
            label: "\(name):\(version)",
            policy: BatchingPolicy(config: config, signature: model.signature),
            instances: min(max(1, Int(config.instances)), 64),
            inPlaceExecutionLimit: inPlaceExecutionLimit)
    }

    /// Runs the model, turning any failure into an ``InferWireError`` that names it.
    func run(_ inputs: [Tensor]) throws(InferWireError) -> [Tensor] {
        let outputs: [Tensor]
        do {
            outputs = try self.model.execute(inputs)
        } catch let error as InferWireError {
            throw error
        } catch {
            throw InferWireError(
                code: .internal, message: "model '\(self.name)' version \(self.version) failed: \(error)", cause: error)
        }
        guard outputs.count == self.signature.outputs.count else {
            throw InferWireError(
                code: .internal,
                message:
                    "model '\(self.name)' returned \(outputs.count) outputs; its signature has \(self.signature.outputs.count)"
            )
        }
        return outputs
    }
}

/// A model, or one of its versions, that could not be loaded, and why.
public struct ModelLoadFailure: Sendable, CustomStringConvertible {
    public init(model: String, version: Int64?, reason: String) {
        self.model = model
        self.version = version
        self.reason = reason
    }

    public var model: String
    /// nil when the failure concerns the whole model (e.g. its config).
    public var version: Int64?
    public var reason: String

    public var description: String {
        "model '\(self.model)'" + (self.version.map { " version \($0)" } ?? "") + ": \(self.reason)"
    }
}

/// Reads a model repository laid out as
///
/// ```
/// <repository>/<model>/config.pbtxt      ModelConfig in protobuf text format
/// <repository>/<model>/<version>/...     one directory per version, named by a positive integer
/// ```
///
/// A model or version that fails to load is reported and skipped; the others are served.
public struct ModelRepository: Sendable {
    /// The repository's root directory.
    public var directory: String
    /// Loaders by platform name.
    public var loaders: [String: any ModelLoader]

    /// - Parameters:
    ///   - directory: the repository root.
    ///   - loaders: the platforms this server can run; built-in ones by default.
    public init(directory: String, loaders: [any ModelLoader] = ModelRepository.builtinLoaders) {
        self.directory = directory
        self.loaders = Dictionary(loaders.map { ($0.platform, $0) }, uniquingKeysWith: { _, last in last })
    }

    /// The loaders for the models InferWire has built in.
    public static let builtinLoaders: [any ModelLoader] = [IdentityModelLoader(), AddSubModelLoader()]

    /// What a scan of the repository produced.
    public struct Contents: Sendable {
        public var models: [LoadedModel]
        public var failures: [ModelLoadFailure]

        public init(models: [LoadedModel], failures: [ModelLoadFailure] = []) {
            self.models = models
            self.failures = failures
        }
    }

    /// Loads every version of every model in the repository.
    /// - Throws: when the repository directory itself cannot be read.
    public func loadAll(logger: Logger) throws -> Contents {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: self.directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw InferWireError(code: .notFound, message: "model repository '\(self.directory)' is not a directory")
        }
        var contents = Contents(models: [], failures: [])
        for name in try fm.contentsOfDirectory(atPath: self.directory).sorted() where !name.hasPrefix(".") {
            let modelDirectory = self.directory + "/" + name
            guard fm.fileExists(atPath: modelDirectory, isDirectory: &isDirectory), isDirectory.boolValue else {
                continue
            }
            do {
                let config = try self.readConfig(model: name)
                let versions = try self.versions(model: name)
                guard !versions.isEmpty else {
                    throw InferWireError(code: .notFound, message: "no version directories (expected \(name)/1/)")
                }
                for version in Self.select(versions, policy: config.hasVersionPolicy ? config.versionPolicy : nil) {
                    do {
                        let loaded = try self.load(model: name, version: version, config: config)
                        contents.models.append(loaded)
                        logger.info(
                            "loaded model",
                            metadata: ["model": "\(name)", "version": "\(version)", "platform": "\(config.platform)"])
                    } catch {
                        let failure = ModelLoadFailure(model: name, version: version, reason: Self.reason(error))
                        contents.failures.append(failure)
                        logger.error(
                            "model version failed to load",
                            metadata: ["model": "\(name)", "version": "\(version)", "reason": "\(failure.reason)"])
                    }
                }
            } catch {
                let failure = ModelLoadFailure(model: name, version: nil, reason: Self.reason(error))
                contents.failures.append(failure)
                logger.error("model failed to load", metadata: ["model": "\(name)", "reason": "\(failure.reason)"])
            }
        }
        return contents
    }

    /// The rule for model names: one path component of letters, digits, `_`, `-` and `.`,
    /// starting with a letter or digit, at most 128 characters. A name never reaches the file
    /// system without passing it, so no request can name a file outside the repository.
    public static let modelNamePattern = "[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"

    /// Throws INVALID_ARGUMENT unless `name` follows ``modelNamePattern``.
    public static func validate(modelName name: String) throws(InferWireError) {
        let utf8 = Array(name.utf8)
        func allowed(_ c: UInt8, first: Bool) -> Bool {
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            case UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "."):
                return !first
            default:
                return false
            }
        }
        guard (1...128).contains(utf8.count),
            utf8.enumerated().allSatisfy({ allowed($0.element, first: $0.offset == 0) })
        else {
            let shown = name.count > 64 ? String(name.prefix(64)) + "…" : name
            throw InferWireError(
                code: .invalidArgument,
                message:
                    "'\(shown)' is not a model name: use 1 to 128 letters, digits, '_', '-' or '.', starting with a letter or digit"
            )
        }
    }

    /// Throws INVALID_ARGUMENT for a version number below 1 (version directories are 1, 2, …).
    public static func validate(version: Int64) throws(InferWireError) {
        guard version >= 1 else {
            throw InferWireError(code: .invalidArgument, message: "version must be 1 or more, got \(version)")
        }
    }

    /// Parses `<model>/config.pbtxt`. A model without one whose versions hold a
    /// `model.onnx` gets a config naming only the platform; the loader takes inputs and
    /// outputs from the graph. Messages name files relative to the repository: they may
    /// reach clients.
    public func readConfig(model: String) throws -> Inferwire_V1_ModelConfig {
        try Self.validate(modelName: model)
        let path = self.directory + "/" + model + "/config.pbtxt"
        let shown = model + "/config.pbtxt"
        if !FileManager.default.fileExists(atPath: path) {
            let versions = (try? self.versions(model: model)) ?? []
            if versions.contains(where: {
                FileManager.default.fileExists(atPath: "\(self.directory)/\(model)/\($0)/model.onnx")
            }) {
                var config = Inferwire_V1_ModelConfig()
                config.name = model
                config.platform = "onnx"
                return config
            }
        }
        guard let text = FileManager.default.contents(atPath: path).flatMap({ String(data: $0, encoding: .utf8) })
        else {
            throw InferWireError(code: .notFound, message: "model '\(model)' is not in the repository (no \(shown))")
        }
        let config: Inferwire_V1_ModelConfig
        do {
            config = try Inferwire_V1_ModelConfig(textFormatString: text)
        } catch {
            throw InferWireError(
                code: .invalidArgument, message: "\(shown) is not a valid ModelConfig: \(error)", cause: error)
        }
        guard config.name.isEmpty || config.name == model else {
            throw InferWireError(
                code: .invalidArgument,
                message: "\(shown) names the model '\(config.name)'; it must match its directory '\(model)'")
        }
        return config
    }

    /// The versions a policy serves out of those on disk (ascending). No policy: the latest.
    public static func select(_ versions: [Int64], policy: Inferwire_V1_VersionPolicy?) -> [Int64] {
        ModelConfiguration.VersionPolicy(policy).select(from: versions)
    }

    /// The version directories of a model, ascending.
    public func versions(model: String) throws -> [Int64] {
        try Self.validate(modelName: model)
        let entries = try FileManager.default.contentsOfDirectory(atPath: self.directory + "/" + model)
        return entries.compactMap { entry in
            guard let version = Int64(entry), version > 0, String(version) == entry else { return nil }
            var isDirectory: ObjCBool = false
            let path = self.directory + "/" + model + "/" + entry
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
                return nil
            }
            return version
        }.sorted()
    }

    /// Throws INVALID_ARGUMENT for a bad name or a version below 1, and NOT_FOUND when the
    /// version has no directory, whatever the platform (the built-ins included).
    public func checkVersionOnDisk(model: String, version: Int64) throws(InferWireError) {
        try Self.validate(version: version)
        let onDisk: [Int64]
        do {
            onDisk = try self.versions(model: model)
        } catch let error as InferWireError {
            throw error
        } catch {
            throw InferWireError(code: .notFound, message: "model '\(model)' is not in the repository")
        }
        guard onDisk.contains(version) else {
            throw InferWireError(
                code: .notFound,
                message:
                    "model '\(model)' has no version \(version) (versions on disk: \(onDisk.map(String.init).joined(separator: ", ")))"
            )
        }
    }

    /// Loads one version with the loader its config's platform names. The version's
    /// directory must exist, whatever the platform.
    public func load(model: String, version: Int64, config: Inferwire_V1_ModelConfig) throws -> LoadedModel {
        try self.checkVersionOnDisk(model: model, version: version)
        var config = config
        config.name = model
        guard let loader = self.loaders[config.platform] else {
            let known = self.loaders.keys.sorted().joined(separator: ", ")
            throw InferWireError(
                code: .unimplemented,
                message: "platform '\(config.platform)' is not available (this server runs: \(known))")
        }
        let start = ContinuousClock.now
        let instance = try loader.load(
            config: config, versionDirectory: self.directory + "/" + model + "/" + String(version))
        return LoadedModel(
            name: model, version: version, config: config, model: instance, loadDuration: .now - start)
    }

    private static func reason(_ error: any Error) -> String {
        (error as? InferWireError)?.message ?? "\(error)"
    }
}
