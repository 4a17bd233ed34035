import Foundation
import InferWireCore
public import InferWireProto

/// Decides whether a canary does worse than its stable version by more than a model's
/// rollout guard allows. A pure function of two window summaries and the settings.
public struct CanaryGuard: Sendable {
    /// One version's outcomes over the guard's window.
    public struct WindowSummary: Sendable, Hashable {
        public var requests: UInt64
        public var failures: UInt64
        /// Upper bound of the p99 latency bucket, in microseconds; 0 with no requests.
        public var p99Micros: UInt64

        public init(requests: UInt64, failures: UInt64, p99Micros: UInt64) {
            self.requests = requests
            self.failures = failures
            self.p99Micros = p99Micros
        }

        var errorRate: Double { self.requests > 0 ? Double(self.failures) / Double(self.requests) : 0 }
    }

    public let settings: Inferwire_V1_RolloutGuard

    public init(settings: Inferwire_V1_RolloutGuard) {
        self.settings = settings
    }

    /// Seconds of history compared (``ModelConfiguration/CanaryGuardSettings/window``).
    public var windowSeconds: Int {
        Int(ModelConfiguration.CanaryGuardSettings(self.settings).window.components.seconds)
    }

    /// Canary requests needed in the window before judging.
    public var minimumRequests: UInt64 { UInt64(ModelConfiguration.CanaryGuardSettings(self.settings).minRequests) }

    /// Why the canary should be rolled back, or nil when it may stay.
    public func verdict(canary: WindowSummary, stable: WindowSummary) -> String? {
        guard canary.requests >= self.minimumRequests else { return nil }
        let span = self.windowSeconds
        let limit = self.settings.maxErrorRateIncrease
        if limit > 0, canary.errorRate - stable.errorRate > limit {
            return String(
                format: "canary error rate %.1f%% vs stable %.1f%% over %ds (limit +%.1f points)",
                canary.errorRate * 100, stable.errorRate * 100, span, limit * 100)
        }
        let ratio = self.settings.maxP99Ratio
        if ratio > 0, stable.p99Micros > 0, Double(canary.p99Micros) > ratio * Double(stable.p99Micros) {
            return
                "canary p99 ≤\(canary.p99Micros) µs vs stable ≤\(stable.p99Micros) µs over \(span)s (limit \(ratio)×)"
        }
        return nil
    }
}

/// Finds versions a repository gained: per model, the versions its version policy serves
/// that are not yet loading, ready or draining.
public struct RepositoryPoller: Sendable {
    /// A version to load, with the model's config (whose rollout settings give it a role).
    public struct Discovery: Sendable {
        public var model: String
        public var version: Int64
        public var config: Inferwire_V1_ModelConfig
    }

    public let repository: ModelRepository

    public init(repository: ModelRepository) {
        self.repository = repository
    }

    /// Scans the repository (blocking file-system reads).
    /// - Parameter present: the versions of a model already loading, ready or draining.
    public func scan(present: (String) -> Set<Int64>) -> [Discovery] {
        let root = self.repository.directory
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasPrefix(".") }
            .sorted()
        var found: [Discovery] = []
        for name in names {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root + "/" + name, isDirectory: &isDirectory),
                isDirectory.boolValue,
                let config = try? self.repository.readConfig(model: name)
            else { continue }
            let wanted = ModelRepository.select(
                (try? self.repository.versions(model: name)) ?? [],
                policy: config.hasVersionPolicy ? config.versionPolicy : nil)
            let loaded = present(name)
            for version in wanted where !loaded.contains(version) {
                found.append(Discovery(model: name, version: version, config: config))
            }
        }
        return found
    }
}
