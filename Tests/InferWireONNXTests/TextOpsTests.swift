import Foundation
import InferWireCore
import InferWireProto
import Testing

@testable import InferWireONNX

/// StringNormalizer, TfIdfVectorizer and com.microsoft.Tokenizer against onnxruntime 1.32:
/// single nodes on the edge cases below, and scikit-learn TF-IDF pipelines end to end.
@Suite("Text operators against onnxruntime")
struct TextOpsTests {
    struct Case: Decodable, CustomStringConvertible {
        struct Attribute: Decodable {
            var name: String
            var i: Int64?
            var s: String?
            var ints: [Int64]?
            var floats: [Float]?
            var strings: [String]?
        }
        var note: String
        var op: String
        var attributes: [Attribute]
        var shape: [Int]
        var strings: [String]?
        var int64s: [Int64]?
        var int32s: [Int32]?
        var wantShape: [Int]?
        var wantStrings: [String]?
        var wantFloats: [Float]?
        var wantError: Bool?
        var description: String { "\(self.op): \(self.note)" }
    }

    /// Built by a script from onnxruntime's outputs (onnxruntime 1.32, onnx 1.23); wantError
    /// marks inputs onnxruntime refuses.
    static let cases: [Case] = try! JSONDecoder().decode([Case].self, from: Data(table.utf8))

    /// The node's kernel, built as the loader builds it.
    static func kernel(_ op: String, _ attributes: [Onnx_AttributeProto]) throws -> any Kernel {
        var node = Onnx_NodeProto()
        node.opType = op
        node.attribute = attributes
        let label = "node (\(op))"
        var context = NodeContext(
            label: label, attributes: Attributes(node, label: label), opset: op == "Tokenizer" ? 1 : 21,
            inputCount: 1, outputCount: 1, constantInputs: [:])
        let registry = op == "Tokenizer" ? Operators.microsoftDomain : Operators.defaultDomain
        let kernel = try registry[op]!(&context)
        try context.attributes.checkAllUsed()
        return kernel
    }

    static func attribute(_ a: Case.Attribute) -> Onnx_AttributeProto {
        var p = Onnx_AttributeProto()
        p.name = a.name
        if let i = a.i {
            p.type = .int
            p.i = i
        } else if let s = a.s {
            p.type = .string
            p.s = Data(s.utf8)
        } else if let ints = a.ints {
            p.type = .ints
            p.ints = ints
        } else if let floats = a.floats {
            p.type = .floats
            p.floats = floats
        } else if let strings = a.strings {
            p.type = .strings
            p.strings = strings.map { Data($0.utf8) }
        }
        return p
    }

    @Test("single nodes give onnxruntime's shapes and values, and fail where it fails", arguments: Self.cases)
    func node(_ c: Case) throws {
        let x: OnnxTensor
        if let strings = c.strings {
            x = OnnxTensor(shape: c.shape, storage: .string(strings))
        } else if let ints = c.int32s {
            x = OnnxTensor(shape: c.shape, storage: .int32(ints))
        } else {
            x = OnnxTensor(shape: c.shape, storage: .int64(c.int64s ?? []))
        }
        let result: OnnxTensor
        do {
            result = try Self.kernel(c.op, c.attributes.map(Self.attribute)).run([x])[0]
        } catch {
            #expect(c.wantError == true, "\(error)")
            return
        }
        #expect(c.wantError != true, "onnxruntime refuses this")
        #expect(result.shape == c.wantShape)
        if let want = c.wantStrings {
            guard case .string(let got) = result.storage else {
                Issue.record("\(result.elementType) output")
                return
            }
            // Byte for byte: Swift's == would take canonically equivalent strings as equal.
            #expect(got.map { Array($0.utf8) } == want.map { Array($0.utf8) }, "\(got)")
        }
        if let want = c.wantFloats { #expect(result.floats == want) }
    }

    @Test("com.microsoft.Tokenizer refuses what onnxruntime's RE2 refuses, and what ICU would match otherwise")
    func tokenizerRefusals() throws {
        func refusal(_ attributes: [String: Any]) -> String? {
            let protos = attributes.sorted { $0.key < $1.key }.map { name, value in
                var a = Case.Attribute(name: name)
                switch value {
                case let v as Int: a.i = Int64(v)
                case let v as String: a.s = v
                case let v as [String]: a.strings = v
                default: break
                }
                return Self.attribute(a)
            }
            do {
                _ = try Self.kernel("Tokenizer", protos)
                return nil
            } catch {
                return "\(error)"
            }
        }
        let base: [String: Any] = ["mark": 0, "mincharnum": 1, "pad_value": "#"]
        func with(_ extra: [String: Any]) -> [String: Any] { base.merging(extra) { $1 } }
        // scikit-learn's default token_pattern: RE2 has no (?u) (skl2onnx writes [a-zA-Z0-9_]+ instead).
        #expect(refusal(with(["tokenexp": #"(?u)\b\w\w+\b"#]))?.contains("not a valid RE2 expression") == true)
        #expect(refusal(with(["tokenexp": "(?=a)b"]))?.contains("not a valid RE2") == true)
        #expect(refusal(with(["tokenexp": #"(a)\1"#]))?.contains("not a valid RE2") == true)
        #expect(refusal(with(["tokenexp": "a**"]))?.contains("bad repetition operator") == true)
        #expect(refusal(with(["tokenexp": "[b-a]"]))?.contains("invalid character class range") == true)
        #expect(refusal(with(["tokenexp": "a{1001}"]))?.contains("invalid repetition size") == true)
        // Leftmost-longest and leftmost-first can differ here: refused rather than run differently.
        #expect(refusal(with(["tokenexp": "(a|ab)(c|bcd)"]))?.contains("longest match") == true)
        #expect(refusal(with(["tokenexp": "(ab)+"]))?.contains("longest match") == true)
        #expect(refusal(with(["separators": ["(a|b)c"]]))?.contains("separator '(a|b)c'") == true)
        #expect(refusal(with(["tokenexp": ".", "mincharnum": 2]))?.contains("too big") == true)
        #expect(refusal(with(["tokenexp": "a", "mincharnum": 0]))?.contains("positive") == true)
        #expect(refusal(with(["tokenexp": ""]))?.contains("must not be empty") == true)
        #expect(refusal(base)?.contains("separators or tokenexp") == true)
        #expect(refusal(["mark": 0, "mincharnum": 1, "tokenexp": "a"])?.contains("pad_value") == true)
        // Accepted: the patterns skl2onnx writes, and sequences with alternatives of them.
        for pattern in ["[a-zA-Z0-9_]+", #"\b\w\w+\b"#, ".", #"(?:\w+)|[^\w\s]+"#, #"(\w)+"#, #"\Qa.b\E+"#] {
            #expect(refusal(with(["tokenexp": pattern])) == nil, "\(pattern)")
        }
    }

    @Test("StringNormalizer refuses a locale whose case mappings it cannot promise; TfIdfVectorizer a bad pool")
    func loadRefusals() throws {
        func strings(_ name: String, _ values: [String]) -> Onnx_AttributeProto {
            Self.attribute(Case.Attribute(name: name, strings: values))
        }
        func string(_ name: String, _ value: String) -> Onnx_AttributeProto {
            Self.attribute(Case.Attribute(name: name, s: value))
        }
        func ints(_ name: String, _ values: [Int64]) -> Onnx_AttributeProto {
            Self.attribute(Case.Attribute(name: name, ints: values))
        }
        func int(_ name: String, _ value: Int64) -> Onnx_AttributeProto {
            Self.attribute(Case.Attribute(name: name, i: value))
        }
        #expect(throws: OnnxError.self) {
            _ = try Self.kernel("StringNormalizer", [string("locale", "tr_TR"), string("case_change_action", "LOWER")])
        }
        #expect(throws: OnnxError.self) {
            _ = try Self.kernel("StringNormalizer", [string("case_change_action", "lower")])
        }
        _ = try Self.kernel("StringNormalizer", [string("locale", "en_US"), string("case_change_action", "LOWER")])
        let grams = [
            string("mode", "TF"), int("min_gram_length", 1), int("max_gram_length", 1), int("max_skip_count", 0),
            ints("ngram_counts", [0]),
        ]
        _ = try Self.kernel("TfIdfVectorizer", grams + [ints("ngram_indexes", [0, 1]), ints("pool_int64s", [5, 6])])
        // onnxruntime crashes on the first (an n-gram without an output column); both are refused here.
        for bad in [
            [ints("ngram_indexes", [0]), ints("pool_int64s", [5, 6])],
            [ints("ngram_indexes", [0, 1]), ints("pool_int64s", [5, 5])],
            [ints("ngram_indexes", [0, -1]), ints("pool_int64s", [5, 6])],
            [ints("ngram_indexes", [0, 1]), strings("pool_strings", [])],
        ] {
            #expect(throws: OnnxError.self) { _ = try Self.kernel("TfIdfVectorizer", grams + bad) }
        }
    }

    /// A Tokenizer alone, as a model file: string input [N] (no shape: no trial run).
    static func tokenizerModel(microsoftOpset: Int64?) -> Data {
        var model = Onnx_ModelProto()
        model.irVersion = 8
        var main = Onnx_OperatorSetIdProto()
        main.version = 21
        model.opsetImport = [main]
        if let microsoftOpset {
            var ms = Onnx_OperatorSetIdProto()
            ms.domain = "com.microsoft"
            ms.version = microsoftOpset
            model.opsetImport.append(ms)
        }
        var node = Onnx_NodeProto()
        node.opType = "Tokenizer"
        node.domain = "com.microsoft"
        node.input = ["X"]
        node.output = ["Y"]
        node.attribute = [
            Self.attribute(Case.Attribute(name: "mark", i: 1)),
            Self.attribute(Case.Attribute(name: "mincharnum", i: 1)),
            Self.attribute(Case.Attribute(name: "pad_value", s: "#")),
            Self.attribute(Case.Attribute(name: "tokenexp", s: "[a-z]+")),
        ]
        var x = Onnx_ValueInfoProto()
        x.name = "X"
        var type = Onnx_TypeProto.Tensor()
        type.elemType = 8
        x.type.tensorType = type
        var y = x
        y.name = "Y"
        model.graph.input = [x]
        model.graph.output = [y]
        model.graph.node = [node]
        return try! model.serializedData()
    }

    @Test("com.microsoft opset 1 loads and runs; a newer one, or none, is refused")
    func microsoftDomain() throws {
        let model = try load(Self.tokenizerModel(microsoftOpset: 1))
        let text = tensor("X", Fixture.Value(dtype: "BYTES", shape: [2], data: [.string("hi there"), .string("")]))
        let y = try model.execute([text])[0]
        #expect(y.shape == [2, 4])
        #expect(strings(y) == ["\u{2}", "hi", "there", "\u{3}", "\u{2}", "\u{3}", "#", "#"])
        #expect(loadError(Self.tokenizerModel(microsoftOpset: 2))?.contains("com.microsoft opset 2 is newer") == true)
        #expect(
            loadError(Self.tokenizerModel(microsoftOpset: nil))?.contains("imports no opset for domain 'com.microsoft'")
                == true)
    }

    /// scripts/make-fixtures exports scikit-learn TfidfVectorizer + LogisticRegression
    /// pipelines with skl2onnx (opsets 21 and ai.onnx.ml 3, no ZipMap) and runs onnxruntime
    /// on sentences with punctuation, upper case, é and ü, emoji, empty strings and words
    /// the vocabulary lacks.
    @Test(
        "TF-IDF pipelines: labels exactly and probabilities within 1e-4 relative of onnxruntime's",
        arguments: ["tfidf_logistic", "tfidf_bigrams_stopwords_logistic", "tfidf_cased_pattern_logistic"])
    func pipeline(_ name: String) throws {
        let fixture = Fixture(name: name)
        let model = try fixture.model()
        for (index, testCase) in try fixture.load().cases.enumerated() {
            let outputs = try model.execute([tensor("text", testCase.inputs["text"]!)])
            let label = try #require(outputs.first { $0.name == "label" })
            let probabilities = try #require(outputs.first { $0.name == "probabilities" })
            let wantLabel = testCase.outputs["label"]!
            let wantProbabilities = testCase.outputs["probabilities"]!
            #expect(label.shape == wantLabel.shape)
            #expect(label.values(as: Int64.self)! == wantLabel.data.map { Int64($0.double) }, "case \(index)")
            #expect(probabilities.shape == wantProbabilities.shape)
            for (ours, theirs) in zip(probabilities.values(as: Float.self)!, wantProbabilities.data.map(\.double)) {
                #expect(abs(Double(ours) - theirs) <= 1e-4 * abs(theirs), "case \(index): \(ours) vs \(theirs)")
            }
        }
    }
}

private let table = #"""
    [
    {"note":"skl2onnx default pattern: ASCII only, so caf\u00e9 loses its \u00e9","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"[a-zA-Z0-9_]+"}],"shape":[4],"strings":["The DOG chased the CAT!","caf\u00e9, \u00fcber na\u00efve","","don't stop-me now"],"wantShape":[4,5],"wantStrings":["The","DOG","chased","the","CAT","caf","ber","na","ve","#","#","#","#","#","#","don","t","stop","me","now"]},
    {"note":"[N, 1] input gives [N, 1, tokens]","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"[a-zA-Z0-9_]+"}],"shape":[2,1],"strings":["The DOG chased the CAT!",""],"wantShape":[2,1,5],"wantStrings":["The","DOG","chased","the","CAT","#","#","#","#","#"]},
    {"note":"marks before padding, [N, C] input","op":"Tokenizer","attributes":[{"name":"mark","i":1},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"[a-zA-Z0-9_]+"}],"shape":[2,2],"strings":["a b","cd","e f g",""],"wantShape":[2,2,5],"wantStrings":["\u0002","a","b","\u0003","#","\u0002","cd","\u0003","#","#","\u0002","e","f","g","\u0003","\u0002","\u0003","#","#","#"]},
    {"note":"no tokens anywhere: last dimension 0, marks or not","op":"Tokenizer","attributes":[{"name":"mark","i":1},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"[a-zA-Z0-9_]+"}],"shape":[3],"strings":["","!!","..."],"wantShape":[3,0],"wantStrings":[]},
    {"note":"no tokens, 2-D","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"[a-zA-Z0-9_]+"}],"shape":[1,2],"strings":["","!!"],"wantShape":[1,2,0],"wantStrings":[]},
    {"note":"empty 1-D input","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"[a-zA-Z0-9_]+"}],"shape":[0],"strings":[],"wantShape":[0],"wantStrings":[]},
    {"note":"empty [3, 0] input","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"[a-zA-Z0-9_]+"}],"shape":[3,0],"strings":[],"wantShape":[3,0],"wantStrings":[]},
    {"note":"empty [0, 2] input","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"[a-zA-Z0-9_]+"}],"shape":[0,2],"strings":[],"wantShape":[0,0],"wantStrings":[]},
    {"note":"\\w and \\b are ASCII in RE2","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"\\b\\w\\w+\\b"}],"shape":[2],"strings":["na\u00efve caf\u00e9 x1 ab","\u00dcber_cool"],"wantShape":[2,5],"wantStrings":["na","ve","caf","x1","ab","ber_cool","#","#","#","#"]},
    {"note":"alternatives: the longest at the leftmost start","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"\\w+|[^\\w\\s]+"}],"shape":[2],"strings":["Hello, world!! 42 times...","\u00e9-mail"],"wantShape":[2,7],"wantStrings":["Hello",",","world","!!","42","times","...","\u00e9-","mail","#","#","#","#","#"]},
    {"note":"longest match, not the first alternative","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"a|ab|abc"}],"shape":[1],"strings":["ab abc abcd a"],"wantShape":[1,4],"wantStrings":["ab","abc","abc","a"]},
    {"note":"laziness means nothing under longest matching","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"a+?"}],"shape":[1],"strings":["aaa"],"wantShape":[1,1],"wantStrings":["aaa"]},
    {"note":"short matches skipped one character at a time","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":3},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"[^ ]+"}],"shape":[1],"strings":["a bb ccc dddd \u00e9\u00e9"],"wantShape":[1,2],"wantStrings":["ccc","dddd"]},
    {"note":"after a short match the search resumes inside it","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":3},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"xb|b{3}"}],"shape":[2],"strings":["xbbb","xbb xbbbb"],"wantShape":[2,1],"wantStrings":["bbb","bbb"]},
    {"note":"multiline anchors","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"(?m)^\\w|\\w$"}],"shape":[2],"strings":["a1 b2\nc3","Ab\tCD"],"wantShape":[2,4],"wantStrings":["a","2","c","3","A","D","#","#"]},
    {"note":"dot stops at newline","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":".+"}],"shape":[2],"strings":["a\nb","x\ny"],"wantShape":[2,2],"wantStrings":["a","b","x","y"]},
    {"note":"case-insensitive flag","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"(?i)hello"}],"shape":[1],"strings":["Hello HELLO hello"],"wantShape":[1,3],"wantStrings":["Hello","HELLO","hello"]},
    {"note":"Unicode classes stay Unicode","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"\\pL+"}],"shape":[1],"strings":["ab1 \u00e9 \u03a9x \u4e2d\u6587"],"wantShape":[1,4],"wantStrings":["ab","\u00e9","\u03a9x","\u4e2d\u6587"]},
    {"note":"&& is not an ICU intersection in RE2","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"[a&&b]"}],"shape":[1],"strings":["a&b[c]"],"wantShape":[1,3],"wantStrings":["a","&","b"]},
    {"note":"POSIX classes","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"[[:alpha:]]+|[[:space:]]"}],"shape":[1],"strings":["tab\tand space"],"wantShape":[1,5],"wantStrings":["tab","\t","and"," ","space"]},
    {"note":"empty matches are too short and skipped","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"a*"}],"shape":[2],"strings":["xyz","aaa"],"wantShape":[2,1],"wantStrings":["#","aaa"]},
    {"note":"tokenexp '.' cuts into characters, newline included","op":"Tokenizer","attributes":[{"name":"mark","i":1},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"tokenexp","s":"."}],"shape":[2],"strings":["h\u00e9llo \ud83d\ude00!","ab"],"wantShape":[2,10],"wantStrings":["\u0002","h","\u00e9","l","l","o"," ","\ud83d\ude00","!","\u0003","\u0002","a","b","\u0003","#","#","#","#","#","#"]},
    {"note":"separators [\"\"] cut into characters","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"separators","strings":[""]}],"shape":[2],"strings":["a\nb","\ud83d\ude00"],"wantShape":[2,3],"wantStrings":["a","\n","b","\ud83d\ude00","#","#"]},
    {"note":"skl2onnx's separators","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"separators","strings":[" ","[.]","\\?",",",";",":","\\!"]}],"shape":[2],"strings":["Hello World. How are you?","a,b;;c"],"wantShape":[2,5],"wantStrings":["Hello","World","How","are","you","a","b","c","#","#"]},
    {"note":"separators apply one after another; short pieces dropped","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":2},{"name":"pad_value","s":"#"},{"name":"separators","strings":[" ","b"]}],"shape":[2],"strings":["ab abc xyz","bbb"],"wantShape":[2,1],"wantStrings":["xyz","#"]},
    {"note":"a separator matching empty skips the next character","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"separators","strings":["x*"]}],"shape":[2],"strings":["ab","a bc"],"wantShape":[2,0],"wantStrings":[]},
    {"note":"separator anchors see each piece","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"separators","strings":["^a"]}],"shape":[1],"strings":["a b c"],"wantShape":[1,1],"wantStrings":[" b c"]},
    {"note":"separators win over tokenexp","op":"Tokenizer","attributes":[{"name":"mark","i":0},{"name":"mincharnum","i":1},{"name":"pad_value","s":"#"},{"name":"separators","strings":[" "]},{"name":"tokenexp","s":"[a-z]"}],"shape":[1],"strings":["a b"],"wantShape":[1,2],"wantStrings":["a","b"]},
    {"note":"","op":"StringNormalizer","attributes":[{"name":"case_change_action","s":"UPPER"},{"name":"stopwords","strings":["monday"]},{"name":"is_case_sensitive","i":1}],"shape":[4],"strings":["monday","tuesday","wednesday","thursday"],"wantShape":[3],"wantStrings":["TUESDAY","WEDNESDAY","THURSDAY"]},
    {"note":"case-insensitive stop words","op":"StringNormalizer","attributes":[{"name":"case_change_action","s":"LOWER"},{"name":"stopwords","strings":["monday"]},{"name":"is_case_sensitive","i":0}],"shape":[3],"strings":["Monday","tuesday","MONDAY"],"wantShape":[1],"wantStrings":["tuesday"]},
    {"note":"all stop words: one empty string, [1, 1]","op":"StringNormalizer","attributes":[{"name":"stopwords","strings":["monday"]}],"shape":[1,2],"strings":["Monday","MONDAY"],"wantShape":[1,1],"wantStrings":[""]},
    {"note":"all stop words: one empty string","op":"StringNormalizer","attributes":[{"name":"stopwords","strings":["monday"]}],"shape":[2],"strings":["Monday","MONDAY"],"wantShape":[1],"wantStrings":[""]},
    {"note":"simple case mappings","op":"StringNormalizer","attributes":[{"name":"case_change_action","s":"LOWER"}],"shape":[12],"strings":["\u00df","\u0130","\u0131","\u01c5","\u1fb3","\ufb00","\u039f\u0394\u039f\u03a3","Stra\u00dfe","\u00c9COLE","\u00b5","\u017f","K"],"wantShape":[12],"wantStrings":["\u00df","i","\u0131","\u01c6","\u1fb3","\ufb00","\u03bf\u03b4\u03bf\u03c3","stra\u00dfe","\u00e9cole","\u00b5","\u017f","k"]},
    {"note":"simple case mappings","op":"StringNormalizer","attributes":[{"name":"case_change_action","s":"UPPER"}],"shape":[12],"strings":["\u00df","\u0130","\u0131","\u01c5","\u1fb3","\ufb00","\u03bf\u03b4\u03bf\u03c2","Stra\u00dfe","\u00e9cole","\u00b5","\u017f","k"],"wantShape":[12],"wantStrings":["\u00df","\u0130","I","\u01c4","\u1fbc","\ufb00","\u039f\u0394\u039f\u03a3","STRA\u00dfE","\u00c9COLE","\u039c","S","K"]},
    {"note":"stop words compared in lower case","op":"StringNormalizer","attributes":[{"name":"stopwords","strings":["s","k","\u03c3"]},{"name":"is_case_sensitive","i":0}],"shape":[10],"strings":["\u017f","s","S","K","k","\u00b5","\u03bc","\u03c2","\u03c3","\u03a3"],"wantShape":[4],"wantStrings":["\u017f","\u00b5","\u03bc","\u03c2"]},
    {"note":"stop words compared byte for byte","op":"StringNormalizer","attributes":[{"name":"stopwords","strings":["\u00e9"]},{"name":"is_case_sensitive","i":1}],"shape":[2],"strings":["e\u0301","\u00e9"],"wantShape":[1],"wantStrings":["e\u0301"]},
    {"note":"[2, 2] is refused","op":"StringNormalizer","attributes":[{"name":"case_change_action","s":"LOWER"}],"shape":[2,2],"strings":["a","b","c","d"],"wantError":true},
    {"note":"empty input is refused","op":"StringNormalizer","attributes":[{"name":"case_change_action","s":"LOWER"}],"shape":[0],"strings":[],"wantError":true},
    {"note":"no stop words and no case change","op":"StringNormalizer","attributes":[],"shape":[1,2],"strings":["a","b"],"wantShape":[1,2],"wantStrings":["a","b"]},
    {"note":"1-D int64","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[0,1,2]},{"name":"pool_int64s","ints":[1,2,3]}],"shape":[5],"int64s":[1,2,1,3,9],"wantShape":[3],"wantFloats":[2.0,1.0,1.0]},
    {"note":"2-D int32","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[0,1,2]},{"name":"pool_int64s","ints":[1,2,3]}],"shape":[2,2],"int32s":[1,2,3,3],"wantShape":[2,3],"wantFloats":[1.0,1.0,0.0,0.0,0.0,2.0]},
    {"note":"0-D input","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[0,1,2]},{"name":"pool_int64s","ints":[1,2,3]}],"shape":[],"int64s":[2],"wantShape":[3],"wantFloats":[0.0,1.0,0.0]},
    {"note":"empty 1-D input","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[0,1,2]},{"name":"pool_int64s","ints":[1,2,3]}],"shape":[0],"int64s":[],"wantShape":[3],"wantFloats":[0.0,0.0,0.0]},
    {"note":"[0, C] is refused","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[0,1,2]},{"name":"pool_int64s","ints":[1,2,3]}],"shape":[0,2],"int64s":[],"wantError":true},
    {"note":"strings against an integer pool: zeros","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[0,1,2]},{"name":"pool_int64s","ints":[1,2,3]}],"shape":[2],"strings":["a","b"],"wantShape":[3],"wantFloats":[0.0,0.0,0.0]},
    {"note":"strings compared byte for byte","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[0,1,2]},{"name":"pool_strings","strings":["\u00e9","e\u0301","x"]}],"shape":[2,2],"strings":["\u00e9","e\u0301","\u00e9","#"],"wantShape":[2,3],"wantFloats":[1.0,1.0,0.0,1.0,0.0,0.0]},
    {"note":"weights","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"IDF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[0,1,2]},{"name":"pool_int64s","ints":[1,2,3]},{"name":"weights","floats":[0.5,2.0,4.0]}],"shape":[4],"int64s":[1,2,2,3],"wantShape":[3],"wantFloats":[0.5,2.0,4.0]},
    {"note":"no weights","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"IDF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[0,1,2]},{"name":"pool_int64s","ints":[1,2,3]}],"shape":[4],"int64s":[1,2,2,3],"wantShape":[3],"wantFloats":[1.0,1.0,1.0]},
    {"note":"weights follow the pool; two n-grams share a column","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"IDF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[2,0,0]},{"name":"pool_int64s","ints":[1,2,3]},{"name":"weights","floats":[0.5,2.0,4.0]}],"shape":[3],"int64s":[1,3,2],"wantShape":[3],"wantFloats":[2.0,0.0,0.5]},
    {"note":"IDF keeps the weight of the n-gram found last","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"IDF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[2,0,0]},{"name":"pool_int64s","ints":[1,2,3]},{"name":"weights","floats":[0.5,2.0,4.0]}],"shape":[3],"int64s":[3,2,1],"wantShape":[3],"wantFloats":[2.0,0.0,0.5]},
    {"note":"weights","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TFIDF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[0,1,2]},{"name":"pool_int64s","ints":[1,2,3]},{"name":"weights","floats":[0.5,2.0,4.0]}],"shape":[4],"int64s":[1,2,2,3],"wantShape":[3],"wantFloats":[0.5,4.0,4.0]},
    {"note":"no weights","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TFIDF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[0,1,2]},{"name":"pool_int64s","ints":[1,2,3]}],"shape":[4],"int64s":[1,2,2,3],"wantShape":[3],"wantFloats":[1.0,2.0,1.0]},
    {"note":"weights follow the pool; two n-grams share a column","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TFIDF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[2,0,0]},{"name":"pool_int64s","ints":[1,2,3]},{"name":"weights","floats":[0.5,2.0,4.0]}],"shape":[3],"int64s":[1,3,2],"wantShape":[3],"wantFloats":[6.0,0.0,0.5]},
    {"note":"IDF keeps the weight of the n-gram found last","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TFIDF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":1},{"name":"max_skip_count","i":0},{"name":"ngram_counts","ints":[0]},{"name":"ngram_indexes","ints":[2,0,0]},{"name":"pool_int64s","ints":[1,2,3]},{"name":"weights","floats":[0.5,2.0,4.0]}],"shape":[3],"int64s":[3,2,1],"wantShape":[3],"wantFloats":[6.0,0.0,0.5]},
    {"note":"bigrams, skip 0","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TF"},{"name":"min_gram_length","i":2},{"name":"max_gram_length","i":2},{"name":"ngram_counts","ints":[0,4]},{"name":"ngram_indexes","ints":[0,1,2,3,4,5,6]},{"name":"pool_int64s","ints":[2,3,5,4,5,6,7,8,6,7]},{"name":"max_skip_count","i":0}],"shape":[2,6],"int64s":[1,1,3,3,3,7,8,6,7,5,6,8],"wantShape":[2,7],"wantFloats":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0,1.0]},
    {"note":"uni- and bigrams, skip 0","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":2},{"name":"ngram_counts","ints":[0,4]},{"name":"ngram_indexes","ints":[0,1,2,3,4,5,6]},{"name":"pool_int64s","ints":[2,3,5,4,5,6,7,8,6,7]},{"name":"max_skip_count","i":0}],"shape":[2,6],"int64s":[1,1,3,3,3,7,8,6,7,5,6,8],"wantShape":[2,7],"wantFloats":[0.0,3.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0,1.0,0.0,1.0]},
    {"note":"bigrams, skip 5","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TF"},{"name":"min_gram_length","i":2},{"name":"max_gram_length","i":2},{"name":"ngram_counts","ints":[0,4]},{"name":"ngram_indexes","ints":[0,1,2,3,4,5,6]},{"name":"pool_int64s","ints":[2,3,5,4,5,6,7,8,6,7]},{"name":"max_skip_count","i":5}],"shape":[2,6],"int64s":[1,1,3,3,3,7,8,6,7,5,6,8],"wantShape":[2,7],"wantFloats":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,1.0,1.0]},
    {"note":"uni- and bigrams, skip 5","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":2},{"name":"ngram_counts","ints":[0,4]},{"name":"ngram_indexes","ints":[0,1,2,3,4,5,6]},{"name":"pool_int64s","ints":[2,3,5,4,5,6,7,8,6,7]},{"name":"max_skip_count","i":5}],"shape":[2,6],"int64s":[1,1,3,3,3,7,8,6,7,5,6,8],"wantShape":[2,7],"wantFloats":[0.0,3.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0,1.0,1.0,1.0]},
    {"note":"trigrams with a skip","op":"TfIdfVectorizer","attributes":[{"name":"mode","s":"TFIDF"},{"name":"min_gram_length","i":1},{"name":"max_gram_length","i":3},{"name":"max_skip_count","i":1},{"name":"ngram_counts","ints":[0,2,6]},{"name":"ngram_indexes","ints":[0,1,2,3,4,5]},{"name":"weights","floats":[1.0,0.5,2.0,1.5,3.0,0.25]},{"name":"pool_strings","strings":["a","b","a","b","a","c","a","b","c","a","c","a"]}],"shape":[8],"strings":["a","b","c","a","b","d","a","c"],"wantShape":[6],"wantFloats":[3.0,1.0,4.0,3.0,3.0,0.0]}
    ]
    """#
