import Foundation
import InferWireCore
public import InferWireProto
import Synchronization

/// Running comparison of a shadow version's answers with the stable version's.
public final class ShadowTally: Sendable {
    public let version: Int64
    private let state = Mutex<(compared: UInt64, differing: UInt64, maxAbs: Double, sumAbs: Double, failures: UInt64)>(
        (0, 0, 0, 0, 0))

    public init(version: Int64) { self.version = version }

    public var report: Inferwire_V1_ShadowReport {
        self.state.withLock { s in
            var r = Inferwire_V1_ShadowReport()
            r.version = self.version
            r.compared = s.compared
            r.differing = s.differing
            r.maxAbsDifference = s.maxAbs
            r.meanAbsDifference = s.compared > 0 ? s.sumAbs / Double(s.compared) : 0
            r.shadowFailures = s.failures
            return r
        }
    }

    /// Compares two answers to one request (serialized InferResponses).
    func compare(stable: Result<[UInt8], InferWireError>, shadow: Result<[UInt8], InferWireError>) {
        guard case .success(let a) = stable else { return }  // nothing to compare with
        guard case .success(let b) = shadow,
            let left = try? Inferwire_V1_InferResponse(serializedBytes: a),
            let right = try? Inferwire_V1_InferResponse(serializedBytes: b)
        else {
            self.state.withLock { $0.failures += 1 }
            return
        }
        var differs = left.outputs.count != right.outputs.count
        var maxAbs = 0.0
        for (x, y) in zip(left.outputs, right.outputs) {
            guard let t = try? Tensor(wire: x), let u = try? Tensor(wire: y), t.dataType == u.dataType,
                t.shape == u.shape
            else {
                differs = true
                continue
            }
            switch t.dataType {
            case .fp32:
                for (p, q) in zip(t.values(as: Float.self)!, u.values(as: Float.self)!) {
                    let d = Double(abs(p - q))
                    maxAbs = max(maxAbs, d)
                    if d > 1e-6 * (1 + Double(abs(p))) { differs = true }
                }
            case .fp64:
                for (p, q) in zip(t.values(as: Double.self)!, u.values(as: Double.self)!) {
                    let d = abs(p - q)
                    maxAbs = max(maxAbs, d)
                    if d > 1e-6 * (1 + abs(p)) { differs = true }
                }
            default:
                if t.data != u.data { differs = true }
            }
        }
        self.state.withLock { s in
            s.compared += 1
            if differs { s.differing += 1 }
            s.maxAbs = max(s.maxAbs, maxAbs)
            s.sumAbs += maxAbs
        }
    }
}

/// Holds whichever of the two answers arrives first until the other does.
final class ShadowPair: Sendable {
    private let tally: ShadowTally
    private let state = Mutex<(stable: Result<[UInt8], InferWireError>?, shadow: Result<[UInt8], InferWireError>?)>(
        (nil, nil))

    init(tally: ShadowTally) { self.tally = tally }

    func stable(_ result: Result<[UInt8], InferWireError>) {
        let other = self.state.withLock { s -> Result<[UInt8], InferWireError>? in
            s.stable = result
            return s.shadow
        }
        if let other { self.tally.compare(stable: result, shadow: other) }
    }

    func shadow(_ result: Result<[UInt8], InferWireError>) {
        let other = self.state.withLock { s -> Result<[UInt8], InferWireError>? in
            s.shadow = result
            return s.stable
        }
        if let other { self.tally.compare(stable: other, shadow: result) }
    }
}
