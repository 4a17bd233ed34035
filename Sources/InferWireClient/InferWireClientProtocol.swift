public import InferWireCore

/// The calls an InferWire client makes, whether to one server (``InferWireClient``) or
/// balanced over several (``BalancedClient``), so code can be written once for either.
///
/// ```swift
/// let client: any InferWireClientProtocol =
///     servers.count == 1
///     ? try await InferWireClient.connect(host: "10.0.0.1", port: 8500)
///     : try await BalancedClient.connect(to: .dns(host: "inferwire.internal", port: 8500))
/// let result = try await client.infer(model: "fraud", inputs: inputs)
/// ```
///
/// The extension below gives every parameter after the first its usual default.
public protocol InferWireClientProtocol: Sendable {
    /// Runs a model on `inputs` and returns its outputs (``InferWireClient/infer(model:version:label:inputs:outputs:timeout:traceParent:traceState:)``).
    func infer(
        model: String, version: Int64?, label: String?, inputs: [Tensor], outputs: [String], timeout: Duration?,
        traceParent: TraceParent?, traceState: String?
    ) async throws -> InferResult
    /// Whether the server process is up and answering.
    func serverLive(timeout: Duration?) async throws -> Bool
    /// Whether the server accepts work.
    func serverReady(timeout: Duration?) async throws -> Bool
    /// Why the server does not accept work; empty when it does.
    func serverNotReadyReasons(timeout: Duration?) async throws -> [String]
    /// The server's name, release, protocol versions, extensions and runtime facts.
    func serverMetadata(timeout: Duration?) async throws -> ServerMetadata
    /// Whether a model (or one version of it) can serve.
    func modelReady(_ name: String, version: Int64?, timeout: Duration?) async throws -> ModelReadiness
    /// A model's inputs, outputs and versions.
    func modelMetadata(_ name: String, version: Int64?, label: String?, timeout: Duration?) async throws
        -> ModelMetadata
    /// Request counts, batch sizes and times of a model's versions (every model's, for "").
    func modelStatistics(_ name: String, timeout: Duration?) async throws -> [VersionStatistics]

    /// Every model with its versions, states and rollout.
    func listModels(timeout: Duration?) async throws -> [ModelStatus]
    /// One model's versions, their states and counts, and its rollout.
    func modelStatus(_ name: String, timeout: Duration?) async throws -> ModelStatus
    /// Loads and warms a version; returns once it is READY or FAILED.
    func loadModel(_ name: String, version: Int64, timeout: Duration?) async throws -> VersionStatus
    /// Stops routing to a version, drains it and frees it.
    func unloadModel(_ name: String, version: Int64, timeout: Duration?) async throws -> VersionStatus
    /// Sends `percent` % of unlabelled requests to `canary` (0 clears it).
    func setTraffic(_ name: String, canary: Int64, percent: UInt32, sticky: Bool, timeout: Duration?) async throws
        -> Rollout
    /// The canary becomes stable.
    func promote(_ name: String, timeout: Duration?) async throws -> Rollout
    /// Withdraws the canary, or returns to the previous stable version.
    func rollback(_ name: String, timeout: Duration?) async throws -> Rollout
    /// Mirrors `percent` % of stable's unlabelled requests to `version` (0 stops).
    func setShadow(_ name: String, version: Int64, percent: UInt32, timeout: Duration?) async throws -> Rollout
    /// Who changed what, when (every model's history for "").
    func history(_ name: String, timeout: Duration?) async throws -> [HistoryEntry]

    /// Closes the connections; later calls fail UNAVAILABLE.
    func close() async
}

extension InferWireClient: InferWireClientProtocol {}

extension InferWireClientProtocol {
    /// Runs a model on `inputs` and returns its outputs as tensors.
    public func infer(
        model: String, version: Int64? = nil, label: String? = nil, inputs: [Tensor], outputs: [String] = [],
        timeout: Duration? = nil
    ) async throws -> InferResult {
        try await self.infer(
            model: model, version: version, label: label, inputs: inputs, outputs: outputs, timeout: timeout,
            traceParent: nil, traceState: nil)
    }

    /// Whether the server process is up and answering.
    public func serverLive() async throws -> Bool { try await self.serverLive(timeout: nil) }

    /// Whether the server accepts work.
    public func serverReady() async throws -> Bool { try await self.serverReady(timeout: nil) }

    /// Why the server does not accept work; empty when it does.
    public func serverNotReadyReasons() async throws -> [String] { try await self.serverNotReadyReasons(timeout: nil) }

    /// The server's name, release, protocol versions, extensions and runtime facts.
    public func serverMetadata() async throws -> ServerMetadata { try await self.serverMetadata(timeout: nil) }

    /// Whether a model (or one version of it) can serve.
    public func modelReady(_ name: String, version: Int64? = nil) async throws -> ModelReadiness {
        try await self.modelReady(name, version: version, timeout: nil)
    }

    /// A model's inputs, outputs and versions.
    public func modelMetadata(_ name: String, version: Int64? = nil, label: String? = nil) async throws
        -> ModelMetadata
    {
        try await self.modelMetadata(name, version: version, label: label, timeout: nil)
    }

    /// Request counts, batch sizes and times of a model's versions (every model's, for "").
    public func modelStatistics(_ name: String = "") async throws -> [VersionStatistics] {
        try await self.modelStatistics(name, timeout: nil)
    }

    /// Every model with its versions, states and rollout.
    public func listModels() async throws -> [ModelStatus] { try await self.listModels(timeout: nil) }

    /// One model's versions, their states and counts, and its rollout.
    public func modelStatus(_ name: String) async throws -> ModelStatus {
        try await self.modelStatus(name, timeout: nil)
    }

    /// Loads and warms a version; returns once it is READY or FAILED.
    public func loadModel(_ name: String, version: Int64) async throws -> VersionStatus {
        try await self.loadModel(name, version: version, timeout: nil)
    }

    /// Stops routing to a version, drains it and frees it.
    public func unloadModel(_ name: String, version: Int64) async throws -> VersionStatus {
        try await self.unloadModel(name, version: version, timeout: nil)
    }

    /// Sends `percent` % of unlabelled requests to `canary` (0 clears it).
    public func setTraffic(_ name: String, canary: Int64, percent: UInt32, sticky: Bool = false) async throws
        -> Rollout
    {
        try await self.setTraffic(name, canary: canary, percent: percent, sticky: sticky, timeout: nil)
    }

    /// The canary becomes stable.
    public func promote(_ name: String) async throws -> Rollout { try await self.promote(name, timeout: nil) }

    /// Withdraws the canary, or returns to the previous stable version.
    public func rollback(_ name: String) async throws -> Rollout { try await self.rollback(name, timeout: nil) }

    /// Mirrors `percent` % of stable's unlabelled requests to `version` (0 stops).
    public func setShadow(_ name: String, version: Int64, percent: UInt32) async throws -> Rollout {
        try await self.setShadow(name, version: version, percent: percent, timeout: nil)
    }

    /// Who changed what, when (every model's history for "").
    public func history(_ name: String = "") async throws -> [HistoryEntry] {
        try await self.history(name, timeout: nil)
    }
}
