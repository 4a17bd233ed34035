public import AsyncHTTPClient
public import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// A key, its value and its revisions in etcd.
public struct EtcdKeyValue: Sendable, Equatable {
    public var key: String
    public var value: Data
    /// The store revision of the key's last change: what a compare-and-swap compares.
    public var modRevision: Int64
    /// The store revision that created the key.
    public var createRevision: Int64
    /// How many times the key changed since it was created.
    public var version: Int64
    /// The lease the key is attached to (it goes when the lease expires); 0 for none.
    public var lease: Int64

    public init(
        key: String, value: Data, modRevision: Int64, createRevision: Int64, version: Int64, lease: Int64 = 0
    ) {
        self.lease = lease
        self.key = key
        self.value = value
        self.modRevision = modRevision
        self.createRevision = createRevision
        self.version = version
    }
}

/// A change seen by a watch.
public struct EtcdEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case put
        case delete
    }
    public var kind: Kind
    /// After a put, the new value; after a delete, the key with the delete's revision.
    public var keyValue: EtcdKeyValue
}

/// What a compare-and-swap did.
public enum EtcdSwapResult: Sendable, Equatable {
    /// The key held the expected revision and now holds the new value, at `revision`.
    case swapped(revision: Int64)
    /// Another change came first: the key as it is now (nil when it does not exist).
    case conflict(current: EtcdKeyValue?)
}

/// Why a call to etcd failed.
public struct EtcdError: Error, Sendable, CustomStringConvertible {
    /// A failure's kind; unknown ones from newer releases are kept by name.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        /// etcd could not be reached, or did not answer in time.
        public static let unavailable = Code(name: "unavailable")
        /// etcd answered with an error status.
        public static let failed = Code(name: "failed")
        /// etcd's answer was not what its API defines.
        public static let badResponse = Code(name: "bad response")
        /// A watch asked for history etcd has compacted away: reload and watch from now.
        public static let compacted = Code(name: "compacted")
        public var description: String { self.name }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(code: Code, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { "\(self.code): \(self.message)" }
}

/// A client of etcd's v3 API through its JSON gateway (`/v3/kv/…`, `/v3/watch`), over
/// AsyncHTTPClient. Keys and values are bytes; keys are given as strings.
public final class EtcdClient: Sendable {
    /// Where etcd listens and how long a call may take.
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// The bound of every call but a watch.
        public var requestTimeout: Duration

        public init(host: String, port: Int, requestTimeout: Duration = .seconds(2)) {
            self.host = host
            self.port = port
            self.requestTimeout = requestTimeout
        }
    }

    public let configuration: Configuration
    private let http: HTTPClient
    private let base: String

    public init(configuration: Configuration) {
        self.configuration = configuration
        var settings = HTTPClient.Configuration()
        settings.timeout.connect = .seconds(2)
        self.http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: settings)
        let host = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
        self.base = "http://\(host):\(configuration.port)"
    }

    /// Closes the client's connections; call once, when done with it.
    public func shutdown() async throws {
        try await self.http.shutdown()
    }

    /// The key's value, or nil when it does not exist.
    public func get(_ key: String) async throws(EtcdError) -> EtcdKeyValue? {
        let answer = try await self.call("/v3/kv/range", ["key": Self.encode(key)])
        return try Self.keyValues(answer["kvs"]).first
    }

    /// Every key starting with `prefix`, in key order, and the store revision they were read at
    /// (a watch from the next revision misses nothing).
    public func list(prefix: String) async throws(EtcdError) -> (values: [EtcdKeyValue], revision: Int64) {
        let answer = try await self.call(
            "/v3/kv/range", ["key": Self.encode(prefix), "range_end": Self.rangeEnd(prefix)])
        return (try Self.keyValues(answer["kvs"]), try Self.revision(answer))
    }

    /// Sets the key, attached to `lease` when one is given; returns the store revision of the change.
    @discardableResult
    public func put(_ key: String, _ value: Data, lease: Int64 = 0) async throws(EtcdError) -> Int64 {
        var body: [String: Any] = ["key": Self.encode(key), "value": value.base64EncodedString()]
        if lease != 0 { body["lease"] = String(lease) }
        return try Self.revision(try await self.call("/v3/kv/put", body))
    }

    /// Deletes the key (nothing happens when it does not exist); returns the store revision.
    @discardableResult
    public func delete(_ key: String) async throws(EtcdError) -> Int64 {
        try Self.revision(try await self.call("/v3/kv/deleterange", ["key": Self.encode(key)]))
    }

    /// Grants a lease of `ttl` seconds: keys attached to it are deleted when it expires.
    /// - Returns: the lease's ID.
    public func grantLease(ttl: Int) async throws(EtcdError) -> Int64 {
        let answer = try await self.call("/v3/lease/grant", ["TTL": String(ttl)])
        let id = Self.int64(answer["ID"])
        guard id != 0 else { throw EtcdError(code: .badResponse, message: "etcd granted a lease without an ID") }
        return id
    }

    /// Renews a lease for its full time to live.
    /// - Returns: the seconds it now lives; 0 when it has expired or was revoked.
    public func keepAlive(lease: Int64) async throws(EtcdError) -> Int64 {
        let answer = try await self.call("/v3/lease/keepalive", ["ID": String(lease)])
        return Self.int64((answer["result"] as? [String: Any])?["TTL"])
    }

    /// Ends a lease at once, deleting the keys attached to it.
    public func revokeLease(_ lease: Int64) async throws(EtcdError) {
        _ = try await self.call("/v3/lease/revoke", ["ID": String(lease)])
    }

    /// Sets the key only if its last change is still `expectedModRevision` (0: only if it does
    /// not exist), in one transaction; otherwise changes nothing and returns the key as it is.
    public func compareAndSwap(_ key: String, expectedModRevision: Int64, value: Data, lease: Int64 = 0)
        async throws(EtcdError) -> EtcdSwapResult
    {
        let encoded = Self.encode(key)
        var put: [String: Any] = ["key": encoded, "value": value.base64EncodedString()]
        if lease != 0 { put["lease"] = String(lease) }
        let answer = try await self.call(
            "/v3/kv/txn",
            [
                "compare": [
                    [
                        "target": "MOD", "result": "EQUAL", "key": encoded,
                        "mod_revision": String(expectedModRevision),
                    ]
                ],
                "success": [["request_put": put]],
                "failure": [["request_range": ["key": encoded]]],
            ])
        if answer["succeeded"] as? Bool == true { return .swapped(revision: try Self.revision(answer)) }
        let responses = answer["responses"] as? [[String: Any]] ?? []
        let range = responses.first?["response_range"] as? [String: Any]
        return .conflict(current: try Self.keyValues(range?["kvs"]).first)
    }

    /// Watches every key starting with `prefix` from `revision` on, handing each batch of
    /// changes to `handle` in order. Returns when the task is cancelled; throws when the
    /// watch breaks (etcd gone: ``EtcdError/Code/unavailable``; history compacted:
    /// ``EtcdError/Code/compacted``), after which the caller re-reads and watches again.
    public func watch(
        prefix: String, from revision: Int64, _ handle: @Sendable ([EtcdEvent]) async throws -> Void
    ) async throws {
        var request = HTTPClientRequest(url: self.base + "/v3/watch")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(
            ByteBuffer(
                data: try Self.json([
                    "create_request": [
                        "key": Self.encode(prefix), "range_end": Self.rangeEnd(prefix),
                        "start_revision": String(revision),
                    ]
                ])))
        let response: HTTPClientResponse
        do {
            response = try await self.http.execute(request, deadline: .distantFuture)
        } catch {
            if Task.isCancelled { return }
            throw EtcdError(code: .unavailable, message: "cannot watch etcd at \(self.base): \(error)", cause: error)
        }
        guard response.status == .ok else {
            throw EtcdError(
                code: Self.code(response.status), message: "etcd refused the watch: HTTP \(response.status.code)")
        }
        // The gateway streams one JSON object per line.
        var pending = Data()
        do {
            for try await chunk in response.body {
                pending.append(contentsOf: chunk.readableBytesView)
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = pending[pending.startIndex..<newline]
                    pending = Data(pending[(newline + 1)...])
                    guard !line.allSatisfy({ $0 == 0x20 || $0 == 0x0D }) else { continue }
                    let events = try Self.watchEvents(Data(line))
                    if !events.isEmpty { try await handle(events) }
                }
            }
        } catch let error as EtcdError {
            throw error
        } catch {
            if Task.isCancelled { return }
            throw EtcdError(
                code: .unavailable, message: "the watch on etcd at \(self.base) broke: \(error)", cause: error)
        }
        if Task.isCancelled { return }
        throw EtcdError(code: .unavailable, message: "etcd at \(self.base) ended the watch")
    }

    // MARK: - The JSON gateway

    private func call(_ path: String, _ body: [String: Any]) async throws(EtcdError) -> [String: Any] {
        var request = HTTPClientRequest(url: self.base + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(data: try Self.json(body)))
        let timeout = self.configuration.requestTimeout.components
        let amount = TimeAmount.nanoseconds(timeout.seconds * 1_000_000_000 + timeout.attoseconds / 1_000_000_000)
        let bytes: ByteBuffer
        let status: HTTPResponseStatus
        do {
            let response = try await self.http.execute(request, timeout: amount)
            status = response.status
            bytes = try await response.body.collect(upTo: 64 << 20)
        } catch {
            throw EtcdError(
                code: .unavailable, message: "etcd at \(self.base) did not answer \(path): \(error)", cause: error)
        }
        let object = try? JSONSerialization.jsonObject(with: Data(buffer: bytes)) as? [String: Any]
        guard status == .ok else {
            let reason = (object?["error"] as? String) ?? (object?["message"] as? String) ?? "HTTP \(status.code)"
            throw EtcdError(code: Self.code(status), message: "etcd refused \(path): \(reason)")
        }
        guard let object else { throw EtcdError(code: .badResponse, message: "etcd's answer to \(path) is not JSON") }
        return object
    }

    /// The gateway answers 408 or 5xx when etcd behind it is stopping or unreachable.
    private static func code(_ status: HTTPResponseStatus) -> EtcdError.Code {
        [408, 502, 503, 504].contains(status.code) ? .unavailable : .failed
    }

    private static func json(_ object: [String: Any]) throws(EtcdError) -> Data {
        do {
            return try JSONSerialization.data(withJSONObject: object)
        } catch {
            throw EtcdError(code: .badResponse, message: "cannot encode a request: \(error)", cause: error)
        }
    }

    private static func encode(_ key: String) -> String { Data(key.utf8).base64EncodedString() }

    /// The end of the range of keys starting with `prefix`: the prefix with its last byte
    /// incremented (bytes of 0xFF dropped first); "\0" (every key) for an empty prefix.
    static func rangeEnd(_ prefix: String) -> String {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0xFF {
                bytes[bytes.count - 1] = last + 1
                return Data(bytes).base64EncodedString()
            }
            bytes.removeLast()
        }
        return Data([0]).base64EncodedString()
    }

    /// A number the gateway writes as a string (int64) — absent when zero.
    private static func int64(_ value: Any?) -> Int64 {
        if let text = value as? String { return Int64(text) ?? 0 }
        if let number = value as? NSNumber { return number.int64Value }
        return 0
    }

    private static func revision(_ answer: [String: Any]) throws(EtcdError) -> Int64 {
        guard let header = answer["header"] as? [String: Any] else {
            throw EtcdError(code: .badResponse, message: "etcd's answer has no header")
        }
        return Self.int64(header["revision"])
    }

    private static func keyValues(_ value: Any?) throws(EtcdError) -> [EtcdKeyValue] {
        guard let list = value as? [[String: Any]] else { return [] }
        return try list.map { entry throws(EtcdError) in try Self.keyValue(entry) }
    }

    private static func keyValue(_ entry: [String: Any]) throws(EtcdError) -> EtcdKeyValue {
        guard let key = (entry["key"] as? String).flatMap({ Data(base64Encoded: $0) }) else {
            throw EtcdError(code: .badResponse, message: "a key in etcd's answer is not base64")
        }
        let value = (entry["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
        return EtcdKeyValue(
            key: String(decoding: key, as: UTF8.self), value: value, modRevision: Self.int64(entry["mod_revision"]),
            createRevision: Self.int64(entry["create_revision"]), version: Self.int64(entry["version"]),
            lease: Self.int64(entry["lease"]))
    }

    /// The events of one line of a watch stream; throws for a cancelled or compacted watch.
    static func watchEvents(_ line: Data) throws(EtcdError) -> [EtcdEvent] {
        guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else {
            throw EtcdError(code: .badResponse, message: "a watch message is not JSON")
        }
        if let error = object["error"] as? [String: Any] {
            // gRPC's UNAVAILABLE (14): etcd is stopping or lost its cluster.
            let code: EtcdError.Code = Self.int64(error["grpc_code"] ?? error["code"]) == 14 ? .unavailable : .failed
            throw EtcdError(code: code, message: "etcd ended the watch: \(error["message"] ?? error)")
        }
        guard let result = object["result"] as? [String: Any] else { return [] }
        let compacted = Self.int64(result["compact_revision"])
        if compacted > 0 {
            throw EtcdError(code: .compacted, message: "etcd compacted history up to revision \(compacted)")
        }
        if result["canceled"] as? Bool == true {
            throw EtcdError(code: .failed, message: "etcd cancelled the watch: \(result["cancel_reason"] ?? "")")
        }
        let events = result["events"] as? [[String: Any]] ?? []
        return try events.map { event throws(EtcdError) in
            guard let kv = event["kv"] as? [String: Any] else {
                throw EtcdError(code: .badResponse, message: "a watch event has no key")
            }
            return EtcdEvent(
                kind: event["type"] as? String == "DELETE" ? .delete : .put, keyValue: try Self.keyValue(kv))
        }
    }
}
