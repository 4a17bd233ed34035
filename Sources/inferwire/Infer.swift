import ArgumentParser
import Foundation
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireProto

struct Infer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call a model once and print its outputs as JSON.",
        discussion: """
            Inputs are JSON arrays, nested to the tensor's rank, typed by the model's metadata:
              inferwire infer --server 127.0.0.1:8500 --model add_sub \\
                --input 'INPUT0=[[1,2,3,4]]' --input 'INPUT1=[[10,20,30,40]]'
            --random fills every input with random values shaped from the metadata.
            On failure the status code and message go to stderr and the exit status is the code's number.
            Several servers (--server a:8500,b:8500, or dns:///NAME:PORT, or a name with several addresses): each call goes to the one with fewer calls in flight of two drawn at random, and a call that did not complete is sent again to another (unless --no-retries).
            """)

    @Option(
        name: .customLong("server"),
        help: ArgumentHelp(
            "Server address HOST:PORT; repeat it or separate with commas to balance over several, or dns:///NAME:PORT for every address of a name.",
            valueName: "address"))
    var servers: [String] = ["127.0.0.1:8500"]

    @Flag(help: "With several servers: send a call once; only calls never sent go to another server.")
    var noRetries = false

    @Option(help: "Model name.")
    var model: String

    @Option(help: "Exact model version.")
    var version: Int64?

    @Option(help: "Version label: stable or canary.")
    var label: String?

    @Option(name: .customLong("input"), help: "NAME=JSON, once per input.")
    var inputs: [String] = []

    @Flag(help: "Fill inputs with random values shaped from the model's metadata (dynamic dims become 1).")
    var random = false

    @Option(name: .customLong("output"), help: "Output to return (repeatable; default all).")
    var outputs: [String] = []

    @Flag(help: "Compress request and response payloads.")
    var compress = false

    @Option(help: "Deadline in milliseconds.")
    var timeoutMs: Int?

    @OptionGroup var security: ClientSecurityOptions

    func validate() throws {
        if self.version != nil && self.label != nil { throw ValidationError("give --version or --label, not both") }
        if self.random == !self.inputs.isEmpty {
            throw ValidationError("give --input NAME=JSON (one per input) or --random")
        }
    }

    func run() async throws {
        do {
            let client = try await connectClient(
                self.servers, configuration: self.security.configuration(compression: self.compress),
                retries: !self.noRetries)
            let result: Result<InferResult, any Error>
            do {
                let timeout = self.timeoutMs.map { Duration.milliseconds($0) }
                let metadata = try await client.modelMetadata(
                    self.model, version: self.version, label: self.label, timeout: timeout)
                let tensors =
                    try self.random
                    ? metadata.inputs.map { try randomTensor($0) }
                    : self.inputs.map { try parseInput($0, metadata: metadata) }
                result = .success(
                    try await client.infer(
                        model: self.model, version: self.version, label: self.label, inputs: tensors,
                        outputs: self.outputs, timeout: timeout))
            } catch {
                result = .failure(error)
            }
            await client.close()
            print(renderJSON(try result.get()))
        } catch let error as InferWireError {
            FileHandle.standardError.write(Data("error: \(error.code): \(error.message)\n".utf8))
            throw ExitCode(Int32(error.code.rawValue))
        }
    }
}

func parseAddress(_ text: String) throws -> (String, Int) {
    do {
        let endpoint = try Endpoint(parsing: text)
        return (endpoint.host, endpoint.port)
    } catch {
        throw ValidationError(error.message)
    }
}

/// Where `--server` points: one server, or a fleet to balance over.
enum ServerChoice {
    case single(Endpoint)
    case fleet(BalancedClient.Target)
}

/// Reads the `--server` arguments: one `HOST:PORT` is one server, unless HOST is a name
/// with several addresses; several addresses, or `dns:///NAME:PORT`, are a fleet.
func serverChoice(_ arguments: [String]) async throws -> ServerChoice {
    let target: BalancedClient.Target
    do {
        target = try BalancedClient.Target(parsing: arguments)
    } catch {
        throw ValidationError(error.message)
    }
    guard case .endpoints(let endpoints) = target.kind, endpoints.count == 1 else { return .fleet(target) }
    let endpoint = endpoints[0]
    guard !endpoint.isAddress else { return .single(endpoint) }
    // A name with one address (or none: the connection then says why) is one server.
    let addresses = (try? await DNSResolver(host: endpoint.host, port: endpoint.port).resolve()) ?? []
    return addresses.count > 1 ? .fleet(.dns(host: endpoint.host, port: endpoint.port)) : .single(endpoint)
}

/// A client for the `--server` arguments: an ``InferWireClient`` for one server, a
/// ``BalancedClient`` for a fleet.
func connectClient(
    _ arguments: [String], configuration: InferWireClient.Configuration, retries: Bool = true
) async throws -> any InferWireClientProtocol {
    switch try await serverChoice(arguments) {
    case .single(let endpoint):
        return try await InferWireClient.connect(
            host: endpoint.host, port: endpoint.port, configuration: configuration)
    case .fleet(let target):
        return try await BalancedClient.connect(
            to: target,
            configuration: .init(
                connection: configuration, retries: retries ? .defaults : .disabled,
                // A short-lived command looks the name up once.
                resolution: .init(interval: nil)))
    }
}

/// Builds a tensor from `NAME=JSON`, typed and shape-checked against the model's metadata.
func parseInput(_ argument: String, metadata: ModelMetadata) throws -> Tensor {
    guard let equals = argument.firstIndex(of: "=") else {
        throw InferWireError(code: .invalidArgument, message: "--input must be NAME=JSON, got '\(argument)'")
    }
    let name = String(argument[..<equals])
    guard let spec = metadata.inputs.first(where: { $0.name == name }) else {
        throw InferWireError(
            code: .invalidArgument,
            message:
                "model '\(metadata.name)' has no input '\(name)' (inputs: \(metadata.inputs.map(\.name).joined(separator: ", ")))"
        )
    }
    let json: Any
    do {
        json = try JSONSerialization.jsonObject(
            with: Data(argument[argument.index(after: equals)...].utf8), options: [.fragmentsAllowed])
    } catch {
        throw InferWireError(
            code: .invalidArgument, message: "--input \(name): not JSON: \(error.localizedDescription)")
    }
    var shape: [Int] = []
    var leaves: [Any] = []
    func walk(_ value: Any, depth: Int) throws {
        if let array = value as? [Any] {
            if depth == shape.count {
                shape.append(array.count)
            } else if shape[depth] != array.count {
                throw InferWireError(code: .invalidArgument, message: "--input \(name): ragged array")
            }
            for element in array { try walk(element, depth: depth + 1) }
        } else {
            guard depth == shape.count else {
                throw InferWireError(code: .invalidArgument, message: "--input \(name): ragged array")
            }
            leaves.append(value)
        }
    }
    try walk(json, depth: 0)
    // A single example for a batched model: add the batch dimension.
    if metadata.maxBatchSize > 0, shape.count == spec.shape.count - 1 { shape.insert(1, at: 0) }
    return try makeTensor(name: name, dataType: spec.dataType, shape: shape, leaves: leaves)
}

func makeTensor(name: String, dataType: DataType, shape: [Int], leaves: [Any]) throws -> Tensor {
    func numbers() throws -> [Double] {
        try leaves.map { leaf in
            if let number = leaf as? NSNumber { return number.doubleValue }
            throw InferWireError(code: .invalidArgument, message: "input '\(name)': \(leaf) is not a number")
        }
    }
    switch dataType {
    case .fp32: return Tensor(name: name, values: try numbers().map { Float($0) }, shape: shape)
    case .fp64: return Tensor(name: name, values: try numbers(), shape: shape)
    case .int32: return Tensor(name: name, values: try numbers().map { Int32($0) }, shape: shape)
    case .int64: return Tensor(name: name, values: try numbers().map { Int64($0) }, shape: shape)
    case .int16: return Tensor(name: name, values: try numbers().map { Int16($0) }, shape: shape)
    case .int8: return Tensor(name: name, values: try numbers().map { Int8($0) }, shape: shape)
    case .uint8: return Tensor(name: name, values: try numbers().map { UInt8($0) }, shape: shape)
    case .bool:
        return Tensor(
            name: name, values: leaves.map { ($0 as? Bool) ?? (($0 as? NSNumber)?.boolValue ?? false) }, shape: shape)
    case .bytes:
        var data = Data()
        for leaf in leaves {
            let bytes = Data("\(leaf)".utf8)
            withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { data.append(contentsOf: $0) }
            data.append(bytes)
        }
        return Tensor(name: name, dataType: .bytes, shape: shape, data: data)
    default:
        throw InferWireError(
            code: .unimplemented, message: "input '\(name)': \(dataType.name) is not supported by this command")
    }
}

func randomTensor(_ spec: TensorSpec) throws -> Tensor {
    let shape = spec.shape.map { $0 < 0 ? 1 : $0 }
    let count = Tensor.elementCount(of: shape) ?? 0
    let leaves: [Any] = (0..<count).map { _ -> Any in
        switch spec.dataType {
        case .fp32, .fp64, .fp16: Double.random(in: -1...1)
        case .bool: Bool.random()
        case .uint8: Int.random(in: 0...255)
        case .int8: Int.random(in: -128...127)
        case .bytes: "x"
        default: Int.random(in: -100...100)
        }
    }
    return try makeTensor(name: spec.name, dataType: spec.dataType, shape: shape, leaves: leaves)
}

/// `{"model_name":…, "model_version":…, "outputs":[{"name","datatype","shape","data"}]}`.
func renderJSON(_ result: InferResult) -> String {
    func quote(_ s: String) -> String {
        let data = try? JSONSerialization.data(withJSONObject: s, options: [.fragmentsAllowed])
        return data.flatMap { String(data: $0, encoding: .utf8) } ?? "\"\""
    }
    func values(_ tensor: Tensor) -> [String] {
        switch tensor.dataType {
        case .fp32: tensor.values(as: Float.self)?.map { $0.isFinite ? "\($0)" : "null" } ?? []
        case .fp64: tensor.values(as: Double.self)?.map { $0.isFinite ? "\($0)" : "null" } ?? []
        case .int32: tensor.values(as: Int32.self)?.map { "\($0)" } ?? []
        case .int64: tensor.values(as: Int64.self)?.map { "\($0)" } ?? []
        case .int16: tensor.values(as: Int16.self)?.map { "\($0)" } ?? []
        case .int8: tensor.values(as: Int8.self)?.map { "\($0)" } ?? []
        case .uint8: tensor.values(as: UInt8.self)?.map { "\($0)" } ?? []
        case .bool: tensor.data.map { $0 != 0 ? "true" : "false" }
        case .bytes:
            {
                var strings: [String] = []
                var offset = 0
                let bytes = [UInt8](tensor.data)
                while offset + 4 <= bytes.count {
                    let length =
                        Int(bytes[offset]) | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2]) << 16 | Int(
                            bytes[offset + 3]) << 24
                    offset += 4
                    let end = min(bytes.count, offset + length)
                    strings.append(quote(String(decoding: bytes[offset..<end], as: UTF8.self)))
                    offset = end
                }
                return strings
            }()
        default: []
        }
    }
    let outputs = result.outputs.map { tensor in
        "    {\"name\": \(quote(tensor.name)), \"datatype\": \"\(tensor.dataType.name)\", "
            + "\"shape\": [\(tensor.shape.map(String.init).joined(separator: ", "))], "
            + "\"data\": [\(values(tensor).joined(separator: ", "))]}"
    }
    return
        "{\n  \"model_name\": \(quote(result.modelName)),\n  \"model_version\": \(result.modelVersion),\n  \"outputs\": [\n"
        + outputs.joined(separator: ",\n") + "\n  ]\n}"
}
