import Synchronization

/// Counts open connections, in all and per client address, and says whether a new one may
/// be served. Shared by every connection of one server.
final class ConnectionLimiter: Sendable {
    /// The counts as a plain value: its transitions are tested without sockets.
    struct State {
        let maxConnections: Int
        let maxPerAddress: Int
        private(set) var total = 0
        private(set) var byAddress: [String: Int] = [:]
        /// Connections admitted since start.
        private(set) var accepted = 0
        /// Connections refused since start: over the server's limit, over one address's.
        private(set) var refusedOverTotal = 0
        private(set) var refusedOverAddress = 0

        init(maxConnections: Int, maxPerAddress: Int) {
            self.maxConnections = maxConnections
            self.maxPerAddress = maxPerAddress
        }

        enum Admission: Equatable {
            case admit
            /// Refused, with the reason to send the client.
            case reject(String)
        }

        mutating func open(from address: String) -> Admission {
            guard self.total < self.maxConnections else {
                self.refusedOverTotal += 1
                return .reject("too many connections to this server (limit \(self.maxConnections)); retry later")
            }
            let count = self.byAddress[address, default: 0]
            guard count < self.maxPerAddress else {
                self.refusedOverAddress += 1
                return .reject(
                    "too many connections from \(address) (limit \(self.maxPerAddress)); reuse one, or retry later")
            }
            self.total += 1
            self.accepted += 1
            self.byAddress[address] = count + 1
            return .admit
        }

        mutating func close(from address: String) {
            guard let count = self.byAddress[address] else { return }
            self.total -= 1
            self.byAddress[address] = count > 1 ? count - 1 : nil
        }
    }

    private let state: Mutex<State>

    init(maxConnections: Int, maxPerAddress: Int) {
        self.state = Mutex(State(maxConnections: maxConnections, maxPerAddress: maxPerAddress))
    }

    /// Admits a connection from `address`; the caller must call ``close(from:)`` when an
    /// admitted connection ends.
    func open(from address: String) -> State.Admission {
        self.state.withLock { $0.open(from: address) }
    }

    func close(from address: String) {
        self.state.withLock { $0.close(from: address) }
    }

    /// Open connections now, and accepted and refused ones since start.
    var counts: ConnectionCounts {
        self.state.withLock {
            ConnectionCounts(
                open: $0.total, accepted: $0.accepted, refusedOverTotal: $0.refusedOverTotal,
                refusedOverAddress: $0.refusedOverAddress)
        }
    }
}

/// A listener's connection counts, for metrics.
public struct ConnectionCounts: Sendable, Equatable {
    public var open: Int
    public var accepted: Int
    /// Refused because the server's own limit was reached.
    public var refusedOverTotal: Int
    /// Refused because one client address reached its limit.
    public var refusedOverAddress: Int
}
