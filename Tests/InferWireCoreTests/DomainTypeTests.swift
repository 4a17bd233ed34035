import InferWireCore
import InferWireProto
import Testing

@Suite("Shared types and their wire forms")
struct DomainTypeTests {
    @Test("every known data type round-trips through the wire enum with its name and size")
    func dataTypes() {
        for type in DataType.known {
            #expect(DataType(type.wire) == type)
            #expect(DataType(name: type.name) == type)
            #expect(DataType(name: type.name.lowercased()) == type)
            #expect(type.isKnown)
        }
        #expect(DataType.fp32.elementSize == 4)
        #expect(DataType.bytes.elementSize == nil)
        #expect(DataType(name: "FLOAT128") == nil)
    }

    @Test("a data type from a newer peer is carried and named, not rejected")
    func unknownDataType() {
        let future = DataType(Inferwire_V1_DataType(rawValue: 42)!)
        #expect(future.rawValue == 42)
        #expect(!future.isKnown)
        #expect(future.name == "TYPE_42")
        #expect(future.elementSize == nil)
        #expect(future.wire.rawValue == 42)
    }

    @Test("status codes keep gRPC's numbers, and unknown codes survive a round trip")
    func codes() {
        #expect(InferWireError.Code.notFound.rawValue == 5)
        #expect(InferWireError.Code.unauthenticated.description == "UNAUTHENTICATED")
        let future = InferWireError.Code(rawValue: 99)
        #expect(future.description == "CODE_99")
        var status = Inferwire_V1_Status()
        status.code = future.wire
        status.message = "from a newer server"
        let error = InferWireError(status: status)
        #expect(error.code == future)
        #expect(error.status.code.rawValue == 99)
        #expect("\(error)" == "CODE_99: from a newer server")
    }

    @Test("a model config message becomes a configuration with the documented defaults")
    func configurationDefaults() throws {
        var wire = Inferwire_V1_ModelConfig()
        wire.name = "m"
        wire.platform = "onnx"
        let config = ModelConfiguration(wire)
        #expect(config.instances == 1)
        #expect(config.dynamicBatching == nil)
        #expect(config.versionPolicy == .latest(count: 1))
        #expect(config.rollout.newVersionRole == .canary)
        #expect(config.rollout.canaryPercent == 10)
        #expect(config.rollout.rollbackGrace == .seconds(600))
        #expect(config.rollout.guard == nil)
    }

    @Test("every field of a model config message reaches the configuration")
    func configurationFields() throws {
        var wire = Inferwire_V1_ModelConfig()
        wire.name = "m"
        wire.platform = "onnx"
        wire.maxBatchSize = 8
        var input = Inferwire_V1_TensorSpec()
        input.name = "X"
        input.datatype = .fp32
        input.shape = [4]
        wire.input = [input]
        var output = input
        output.name = "Y"
        wire.output = [output]
        wire.parameters = ["model_filename": "a.onnx"]
        wire.instances = 3
        wire.dynamicBatching.maxQueueDelayUs = 250
        wire.dynamicBatching.preferredBatchSize = [4, 8]
        wire.versionPolicy.specific.versions = [1, 3]
        wire.rollout.newVersionRole = .stable
        wire.rollout.rollbackGraceSeconds = 5
        wire.rollout.guard.maxP99Ratio = 2
        let config = ModelConfiguration(wire)
        #expect(config.maxBatchSize == 8)
        #expect(config.inputs == [TensorSpec(name: "X", dataType: .fp32, shape: [4])])
        #expect(config.parameters["model_filename"] == "a.onnx")
        #expect(config.instances == 3)
        #expect(
            config.dynamicBatching
                == .init(preferredBatchSizes: [4, 8], maxQueueDelay: .microseconds(250), maxQueueSize: 0))
        #expect(config.versionPolicy == .specific([1, 3]))
        #expect(config.versionPolicy.select(from: [3, 1, 2, 4]) == [1, 3])
        #expect(config.rollout.newVersionRole == .stable)
        #expect(config.rollout.rollbackGrace == .seconds(5))
        #expect(config.rollout.guard?.maxP99Ratio == 2)
        #expect(config.rollout.guard?.window == .seconds(30))
        // The signature puts the batch dimension back in front.
        #expect(try ModelSignature(configuration: config).inputs[0].shape == [-1, 4])
    }

    @Test("version policies select the versions they name")
    func versionPolicies() {
        #expect(ModelConfiguration.VersionPolicy.latest(count: 2).select(from: [1, 5, 3]) == [3, 5])
        #expect(ModelConfiguration.VersionPolicy.all.select(from: [2, 1]) == [1, 2])
        #expect(ModelConfiguration.VersionPolicy.default.select(from: [1, 2, 3]) == [3])
    }
}
