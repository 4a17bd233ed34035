import ArgumentParser
import Foundation
import InferWireClient
import InferWireCore

/// `inferwire models …`: the management service from the command line.
struct Models: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect and change which model versions serve: load, unload, canary traffic, promote, rollback.",
        subcommands: [
            List.self, Status.self, Load.self, Unload.self, Traffic.self, Shadow.self, Promote.self, Rollback.self,
            History.self,
        ])

    struct Server: ParsableArguments {
        @Option(
            name: .customLong("server"),
            help: ArgumentHelp(
                "Server address HOST:PORT (the management listener, if the server has one). With several (repeated, comma-separated, or dns:///NAME:PORT) the call goes to one of them and is never sent twice.",
                valueName: "address"))
        var servers: [String] = ["127.0.0.1:8500"]

        @OptionGroup var security: ClientSecurityOptions

        func run<T>(_ body: (any InferWireClientProtocol) async throws -> T) async throws -> T {
            do {
                let client = try await connectClient(self.servers, configuration: self.security.configuration())
                let result: Result<T, any Error>
                do { result = .success(try await body(client)) } catch { result = .failure(error) }
                await client.close()
                return try result.get()
            } catch let error as InferWireError {
                FileHandle.standardError.write(Data("error: \(error.code): \(error.message)\n".utf8))
                throw ExitCode(Int32(error.code.rawValue))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Models, their versions and rollout.")
        @OptionGroup var server: Server
        func run() async throws {
            for model in try await self.server.run({ try await $0.listModels() }) { print(render(model)) }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One model's versions, states, counts and rollout.")
        @OptionGroup var server: Server
        @Argument var model: String
        func run() async throws {
            print(render(try await self.server.run { try await $0.modelStatus(self.model) }))
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Load and warm a version off the serving path.")
        @OptionGroup var server: Server
        @Argument var model: String
        @Argument var version: Int64
        func run() async throws {
            let status = try await self.server.run { try await $0.loadModel(self.model, version: self.version) }
            print(
                "\(self.model) version \(status.version): \(status.state)\(status.reason.isEmpty ? "" : " (\(status.reason))")"
            )
            if status.state == .failed { throw ExitCode(Int32(InferWireError.Code.failedPrecondition.rawValue)) }
        }
    }

    struct Unload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop routing to a version, drain it and free it.")
        @OptionGroup var server: Server
        @Argument var model: String
        @Argument var version: Int64
        func run() async throws {
            let status = try await self.server.run { try await $0.unloadModel(self.model, version: self.version) }
            print("\(self.model) version \(status.version): \(status.state)")
        }
    }

    struct Traffic: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send a share of unlabelled requests to a canary version (--canary 0 clears it).")
        @OptionGroup var server: Server
        @Argument var model: String
        @Option(help: "Canary version; 0 clears the canary.") var canary: Int64
        @Option(help: "Share of unlabelled requests, 0-100.") var percent: UInt32 = 10
        @Flag(help: "Route by the request's routing key instead of at random.") var sticky = false
        func run() async throws {
            let rollout = try await self.server.run {
                try await $0.setTraffic(self.model, canary: self.canary, percent: self.percent, sticky: self.sticky)
            }
            print("\(self.model): \(render(rollout))")
        }
    }

    struct Shadow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mirror a share of stable's traffic to a version and compare its answers (--version 0 stops).")
        @OptionGroup var server: Server
        @Argument var model: String
        @Option(help: "Shadow version; 0 stops shadowing.") var version: Int64
        @Option(help: "Share of stable's unlabelled requests mirrored, 0-100.") var percent: UInt32 = 10
        func run() async throws {
            let rollout = try await self.server.run {
                try await $0.setShadow(self.model, version: self.version, percent: self.percent)
            }
            print("\(self.model): \(render(rollout))")
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make the canary the stable version.")
        @OptionGroup var server: Server
        @Argument var model: String
        func run() async throws {
            print("\(self.model): \(render(try await self.server.run { try await $0.promote(self.model) }))")
        }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Withdraw the canary, or restore the previous stable version.")
        @OptionGroup var server: Server
        @Argument var model: String
        func run() async throws {
            print("\(self.model): \(render(try await self.server.run { try await $0.rollback(self.model) }))")
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Who changed what, when.")
        @OptionGroup var server: Server
        @Argument var model: String = ""
        func run() async throws {
            let formatter = ISO8601DateFormatter()
            for entry in try await self.server.run({ try await $0.history(self.model) }) {
                let when = formatter.string(from: Date(timeIntervalSince1970: Double(entry.unixMillis) / 1000))
                let who = entry.principal.isEmpty ? entry.actor : "\(entry.actor): \(entry.principal)"
                print("\(when)  \(entry.model)  \(entry.action)  \(entry.detail)  (\(who))")
            }
        }
    }
}

func render(_ rollout: Rollout) -> String { rollout.description }

func render(_ model: ModelStatus) -> String {
    var lines = ["\(model.name): \(render(model.rollout))"]
    if let s = model.shadow {
        lines.append(
            "  shadow version \(s.version): \(s.compared) compared, \(s.differing) differing, max |Δ| \(s.maxAbsDifference), mean |Δ| \(s.meanAbsDifference), \(s.shadowFailures) shadow failures"
        )
    }
    for v in model.versions {
        lines.append(
            "  version \(v.version): \(v.state)" + (v.reason.isEmpty ? "" : " — \(v.reason)")
                + (v.state == .ready
                    ? "  requests \(v.requestCount), failures \(v.failureCount), mean compute \(v.meanCompute.inMicroseconds) µs"
                    : ""))
    }
    if !model.replicas.isEmpty {
        lines.append("  replicas (as last reported to the shared state):")
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        for replica in model.replicas {
            let versions = replica.versions.map { v in
                "\(v.version) \(v.state)" + (v.reason.isEmpty ? "" : " (\(v.reason))")
            }
            let age = max(0, now - replica.reportedUnixMillis)
            lines.append(
                "    \(replica.replica): \(versions.joined(separator: ", "))  [\(String(format: "%.1f", Double(age) / 1000)) s ago]"
            )
        }
    }
    return lines.joined(separator: "\n")
}
