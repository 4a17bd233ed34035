import ArgumentParser

@main
struct InferWireCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inferwire",
        abstract: "InferWire: a low-latency ML inference server and its client tools.",
        subcommands: [Serve.self, Infer.self, Models.self, Bench.self, Token.self]
    )
}
