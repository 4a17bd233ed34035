public import InferWireCore
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One server a ``BalancedClient`` calls: a host (an address or a name) and a port.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    /// An IP address, or a name the connection resolves when it opens.
    public var host: String
    /// The TCP port, 1–65535.
    public var port: Int

    /// An endpoint from its parts, unchecked.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`, or `[IPv6]:PORT`; the port must be 1–65535.
    public init(parsing text: String) throws(InferWireError) {
        let text = text.trimmingWhitespace
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw Self.invalid(text)
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw Self.invalid(text) }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            // An IPv6 address without brackets: its last group would be read as the port.
            guard !host.contains(":") else {
                throw InferWireError(
                    code: .invalidArgument, message: "an IPv6 address needs brackets: [ADDRESS]:PORT, got '\(text)'")
            }
        }
        guard !host.isEmpty, let port = Int(portText), (1...65535).contains(port) else { throw Self.invalid(text) }
        self.init(host: String(host), port: port)
    }

    private static func invalid(_ text: String) -> InferWireError {
        InferWireError(
            code: .invalidArgument, message: "a server address is HOST:PORT with a port 1-65535, got '\(text)'")
    }

    /// Whether `host` is an IP address rather than a name.
    public var isAddress: Bool { (try? SocketAddress(ipAddress: self.host, port: 0)) != nil }

    /// `HOST:PORT`, with an IPv6 address in brackets.
    public var description: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }
}

/// Finds the endpoints a ``BalancedClient`` calls. It is asked at start and then every
/// `BalancedClient.Configuration.resolution.interval`; an answer that throws or
/// is empty leaves the previous endpoints in place.
public protocol EndpointResolver: Sendable {
    /// The endpoints to call now.
    func resolve() async throws -> [Endpoint]
}

/// Which addresses of a name to call, when it has both IPv4 and IPv6 ones.
public struct AddressPreference: Hashable, Sendable, CustomStringConvertible {
    private enum Kind: Hashable, Sendable { case preferIPv4, preferIPv6, all }
    private let kind: Kind

    /// The IPv4 addresses when there are any, else the IPv6 ones. A dual-stack server (and
    /// `localhost`, which is usually 127.0.0.1 and ::1) is then one endpoint, not two.
    public static let preferIPv4 = AddressPreference(kind: .preferIPv4)
    /// The IPv6 addresses when there are any, else the IPv4 ones.
    public static let preferIPv6 = AddressPreference(kind: .preferIPv6)
    /// Every address: a server reachable over both families is called as two endpoints.
    public static let all = AddressPreference(kind: .all)

    public var description: String {
        switch self.kind {
        case .preferIPv4: "preferIPv4"
        case .preferIPv6: "preferIPv6"
        case .all: "all"
        }
    }

    /// `addresses` (IP address strings, in the resolver's order) filtered by this preference,
    /// each address once.
    package func filter(_ addresses: [String]) -> [String] {
        var seen = Set<String>()
        let unique = addresses.filter { seen.insert($0).inserted }
        let v4 = unique.filter { !$0.contains(":") }
        let v6 = unique.filter { $0.contains(":") }
        switch self.kind {
        case .preferIPv4: return v4.isEmpty ? v6 : v4
        case .preferIPv6: return v6.isEmpty ? v4 : v6
        case .all: return unique
        }
    }
}

/// Every address of a DNS name, looked up with the system resolver (`getaddrinfo`, so
/// `/etc/hosts` counts) on NIO's blocking-I/O thread pool, never on an event loop.
public struct DNSResolver: EndpointResolver {
    /// The name to look up.
    public var host: String
    /// The port every endpoint gets.
    public var port: Int
    /// Which of the name's addresses become endpoints.
    public var preference: AddressPreference

    /// A resolver for `host`, its endpoints on `port`.
    public init(host: String, port: Int, preference: AddressPreference = .preferIPv4) {
        self.host = host
        self.port = port
        self.preference = preference
    }

    /// The name's addresses, one endpoint each, in the resolver's order.
    /// - Throws: UNAVAILABLE when the name does not resolve or has no address.
    public func resolve() async throws -> [Endpoint] {
        let host = self.host
        let addresses: [String]
        do {
            addresses = try await NIOThreadPool.singleton.runIfActive { try Self.lookUp(host) }
        } catch let error as InferWireError {
            throw error
        } catch {
            throw InferWireError(code: .unavailable, message: "cannot resolve '\(host)': \(error)", cause: error)
        }
        let chosen = self.preference.filter(addresses)
        guard !chosen.isEmpty else {
            throw InferWireError(code: .unavailable, message: "'\(host)' resolves to no address")
        }
        return chosen.map { Endpoint(host: $0, port: self.port) }
    }

    /// The addresses `getaddrinfo` gives for `host`, as numeric strings (blocking).
    static func lookUp(_ host: String) throws(InferWireError) -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
            hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0 else {
            let reason = String(cString: gai_strerror(status))
            throw InferWireError(code: .unavailable, message: "cannot resolve '\(host)': \(reason)")
        }
        defer { freeaddrinfo(list) }
        var addresses: [String] = []
        var next = list
        while let entry = next {
            if let address = Self.numeric(entry.pointee) { addresses.append(address) }
            next = entry.pointee.ai_next
        }
        return addresses
    }

    private static func numeric(_ entry: addrinfo) -> String? {
        guard let address = entry.ai_addr, entry.ai_family == AF_INET || entry.ai_family == AF_INET6 else {
            return nil
        }
        var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        guard getnameinfo(address, entry.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0
        else { return nil }
        return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

extension BalancedClient {
    /// The servers a ``BalancedClient`` calls: a fixed list, every address of a DNS name, or
    /// a resolver of your own.
    public struct Target: Sendable, CustomStringConvertible {
        package enum Kind: Sendable {
            case endpoints([Endpoint])
            case dns(host: String, port: Int)
            case resolver(any EndpointResolver)
        }

        package let kind: Kind

        private init(kind: Kind) { self.kind = kind }

        /// These servers, for as long as the client lives. A name among them is resolved by its
        /// connection, as ``InferWireClient`` does: it is one endpoint, however many addresses it has.
        public static func endpoints(_ endpoints: [Endpoint]) -> Target {
            var seen = Set<Endpoint>()
            return Target(kind: .endpoints(endpoints.filter { seen.insert($0).inserted }))
        }

        /// Every address of `host` (``DNSResolver``), each an endpoint, looked up again every
        /// `configuration.resolution.interval`. With TLS, certificates are verified
        /// against `host` unless the configuration names another server name.
        public static func dns(host: String, port: Int) -> Target {
            Target(kind: .dns(host: host, port: port))
        }

        /// The endpoints `resolver` gives, asked as often as a DNS name would be.
        public static func resolver(_ resolver: any EndpointResolver) -> Target {
            Target(kind: .resolver(resolver))
        }

        /// Parses server arguments the way `inferwire` takes `--server`: each argument holds one
        /// or more comma-separated addresses, `HOST:PORT` or `[IPv6]:PORT` (a fixed list), or is
        /// `dns:///NAME:PORT` (every address of NAME, looked up again periodically).
        ///
        /// - Throws: INVALID_ARGUMENT naming the argument that does not parse.
        public init(parsing arguments: [String]) throws(InferWireError) {
            let items = arguments.flatMap { $0.split(separator: ",") }.map { String($0).trimmingWhitespace }
                .filter { !$0.isEmpty }
            guard !items.isEmpty else {
                throw InferWireError(code: .invalidArgument, message: "no server address given")
            }
            let dns = items.filter { $0.lowercased().hasPrefix("dns:") }
            if dns.isEmpty {
                var endpoints: [Endpoint] = []
                for item in items { endpoints.append(try Endpoint(parsing: item)) }
                self = .endpoints(endpoints)
                return
            }
            guard items.count == 1 else {
                throw InferWireError(
                    code: .invalidArgument,
                    message: "a dns: address stands alone; give either one dns:///NAME:PORT or a list of HOST:PORT")
            }
            var rest = Substring(items[0].dropFirst("dns:".count))
            if rest.hasPrefix("//") {
                rest = rest.dropFirst(2)
                // dns://AUTHORITY/NAME:PORT names a DNS server: not supported, the system's is used.
                guard rest.hasPrefix("/") else {
                    throw InferWireError(
                        code: .invalidArgument,
                        message:
                            "'\(items[0])' names a DNS server; the system resolver is used: write dns:///NAME:PORT")
                }
                rest = rest.dropFirst()
            }
            let endpoint: Endpoint
            do {
                endpoint = try Endpoint(parsing: String(rest))
            } catch {
                throw InferWireError(
                    code: .invalidArgument, message: "a DNS address is dns:///NAME:PORT, got '\(items[0])'")
            }
            self = .dns(host: endpoint.host, port: endpoint.port)
        }

        /// The list, `dns:///NAME:PORT`, or `resolver`.
        public var description: String {
            switch self.kind {
            case .endpoints(let endpoints): endpoints.map(\.description).joined(separator: ",")
            case .dns(let host, let port): "dns:///\(Endpoint(host: host, port: port))"
            case .resolver(let resolver): "\(resolver)"
            }
        }
    }
}

extension String {
    fileprivate var trimmingWhitespace: String {
        String(self.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
