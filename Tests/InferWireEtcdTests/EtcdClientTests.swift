import Foundation
import Testing

@testable import InferWireEtcd

@Suite("etcd through its JSON gateway", .serialized, .timeLimit(.minutes(2)))
struct EtcdClientTests {
    @Test("put, get and list by prefix round-trip keys and values, with revisions")
    func putGetList() async throws {
        try await withEtcd { _, client in
            #expect(try await client.get("inferwire/models/fraud") == nil)
            let first = try await client.put("inferwire/models/fraud", Data("{\"stable\":1}".utf8))
            let second = try await client.put("inferwire/models/mlp", Data([0, 0xFF, 7]))
            _ = try await client.put("other/key", Data("x".utf8))
            #expect(second > first)
            let fraud = try #require(try await client.get("inferwire/models/fraud"))
            #expect(String(decoding: fraud.value, as: UTF8.self) == "{\"stable\":1}")
            #expect(fraud.modRevision == first)
            #expect(fraud.version == 1)
            let (values, revision) = try await client.list(prefix: "inferwire/models/")
            #expect(values.map(\.key) == ["inferwire/models/fraud", "inferwire/models/mlp"])
            #expect(values[1].value == Data([0, 0xFF, 7]))
            #expect(revision >= second)
        }
    }

    @Test("compare-and-swap: the expected revision wins once; a stale one gets the current value and changes nothing")
    func compareAndSwap() async throws {
        try await withEtcd { _, client in
            // Revision 0: only if absent.
            guard
                case .swapped(let created) = try await client.compareAndSwap(
                    "k", expectedModRevision: 0, value: Data("a".utf8))
            else {
                Issue.record("creating an absent key failed")
                return
            }
            #expect(
                try await client.compareAndSwap("k", expectedModRevision: 0, value: Data("b".utf8))
                    == .conflict(current: try await client.get("k")))
            // Two writers that read the same revision: one wins, the other sees the winner's value.
            let winner = try await client.compareAndSwap("k", expectedModRevision: created, value: Data("c".utf8))
            let loser = try await client.compareAndSwap("k", expectedModRevision: created, value: Data("d".utf8))
            guard case .swapped(let revision) = winner, case .conflict(let current?) = loser else {
                Issue.record("expected one swap and one conflict, got \(winner) and \(loser)")
                return
            }
            #expect(current.value == Data("c".utf8))
            #expect(current.modRevision == revision)
            #expect(try await client.get("k")?.value == Data("c".utf8))
        }
    }

    @Test("a watch sees every change under its prefix from the revision it starts at, in order")
    func watch() async throws {
        try await withEtcd { _, client in
            let (_, revision) = try await client.list(prefix: "w/")
            let (stream, continuation) = AsyncStream.makeStream(of: EtcdEvent.self)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await client.watch(prefix: "w/", from: revision + 1) { events in
                        for event in events { continuation.yield(event) }
                    }
                }
                // Written after the watch's start revision: seen however late the watch connects.
                try await client.put("w/a", Data("1".utf8))
                try await client.put("elsewhere", Data("ignored".utf8))
                try await client.put("w/b", Data("2".utf8))
                try await client.put("w/a", Data("3".utf8))
                var seen: [String] = []
                for await event in stream {
                    seen.append("\(event.keyValue.key)=\(String(decoding: event.keyValue.value, as: UTF8.self))")
                    if seen.count == 3 { break }
                }
                #expect(seen == ["w/a=1", "w/b=2", "w/a=3"])
                group.cancelAll()
            }
        }
    }

    @Test("when etcd is gone, calls fail UNAVAILABLE and a watch ends with an error")
    func unavailable() async throws {
        try await withEtcd { etcd, client in
            try await client.put("k", Data("v".utf8))
            let (_, revision) = try await client.list(prefix: "k")
            try await withThrowingTaskGroup(of: EtcdError?.self) { group in
                group.addTask {
                    do {
                        try await client.watch(prefix: "k", from: revision + 1) { _ in }
                        return nil
                    } catch let error as EtcdError {
                        return error
                    }
                }
                // The watch is connected once a change made after it starts reaches it; stopping
                // etcd then must end it with an error rather than leave it hanging.
                etcd.stop()
                let error = try await group.next() ?? nil
                #expect(error?.code == .unavailable, "\(String(describing: error))")
            }
            do {
                _ = try await client.get("k")
                Issue.record("a read succeeded with etcd stopped")
            } catch let error as EtcdError {
                #expect(error.code == .unavailable)
                #expect(error.message.contains("127.0.0.1:\(etcd.clientPort)"))
            }
        }
    }

    @Test("prefix ranges end just past the prefix")
    func rangeEnd() {
        #expect(Data(base64Encoded: EtcdClient.rangeEnd("a/")) == Data("a0".utf8))
        #expect(Data(base64Encoded: EtcdClient.rangeEnd("")) == Data([0]))
        #expect(Data(base64Encoded: EtcdClient.rangeEnd("inferwire/")) == Data("inferwire0".utf8))
    }
}
