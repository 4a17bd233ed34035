import Foundation

/// Text operators: StringNormalizer and TfIdfVectorizer (default domain), and onnxruntime's
/// com.microsoft.Tokenizer, the three that scikit-learn's text pipelines need once skl2onnx
/// has converted them. Their edge cases follow onnxruntime's kernels, which is what
/// such models are checked against.
enum TextOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["StringNormalizer"] = { c in try StringNormalizer(&c) }
        r["TfIdfVectorizer"] = { c in try TfIdfVectorizer(&c) }
    }

    /// The com.microsoft domain.
    static func registerMicrosoft(_ r: inout [String: KernelFactory]) {
        r["Tokenizer"] = { c in try Tokenizer(&c) }
    }
}

/// A string compared and hashed by its UTF-8 bytes, as onnxruntime compares strings: Swift's
/// own `==` would take "é" and "e\u{301}" (canonically equivalent) for the same word.
struct ByteString: Hashable, Sendable {
    let string: String
    init(_ string: String) { self.string = string }
    static func == (a: ByteString, b: ByteString) -> Bool { a.string.utf8.elementsEqual(b.string.utf8) }
    func hash(into hasher: inout Hasher) {
        var string = self.string
        string.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}

/// Unicode's simple (one character to one character) case mappings: what onnxruntime's
/// StringNormalizer gets from `std::tolower`/`std::toupper` on each character under
/// en_US.UTF-8. "ß" stays "ß" in upper case and "İ" becomes "i", where Swift's full
/// mappings would give "SS" and "i̇".
enum SimpleCase {
    static func lowercased(_ s: String) -> String {
        if s.utf8.allSatisfy({ $0 < 0x80 }) { return s.lowercased() }
        var out = String.UnicodeScalarView()
        for c in s.unicodeScalars { out.append(lower(c)) }
        return String(out)
    }

    static func uppercased(_ s: String) -> String {
        if s.utf8.allSatisfy({ $0 < 0x80 }) { return s.uppercased() }
        var out = String.UnicodeScalarView()
        for c in s.unicodeScalars { out.append(upper(c)) }
        return String(out)
    }

    static func lower(_ c: Unicode.Scalar) -> Unicode.Scalar {
        if let single = Self.single(c.properties.lowercaseMapping) { return single }
        // The one character whose full lowercase mapping is longer than its simple one.
        return c.value == 0x130 ? "i" : c
    }

    static func upper(_ c: Unicode.Scalar) -> Unicode.Scalar {
        if let single = Self.single(c.properties.uppercaseMapping) { return single }
        // Where the full mapping has more than one character the simple one is the
        // character itself, except for the Greek letters with ypogegrammeni, whose simple
        // upper case is the matching letter with prosgegrammeni.
        switch c.value {
        case 0x1F80...0x1F87, 0x1F90...0x1F97, 0x1FA0...0x1FA7: return Unicode.Scalar(c.value + 8)!
        case 0x1FB3: return "\u{1FBC}"
        case 0x1FC3: return "\u{1FCC}"
        case 0x1FF3: return "\u{1FFC}"
        default: return c
        }
    }

    private static func single(_ mapping: String) -> Unicode.Scalar? {
        var scalars = mapping.unicodeScalars.makeIterator()
        guard let first = scalars.next(), scalars.next() == nil else { return nil }
        return first
    }
}

// MARK: - StringNormalizer

/// StringNormalizer-10: drops stop words, then changes case. X is [C] or [1, C] (C > 0);
/// Y is [C'] or [1, C'], and a single empty string when every word was a stop word.
struct StringNormalizer: Kernel {
    enum CaseChange: String {
        case lower = "LOWER"
        case upper = "UPPER"
        case none = "NONE"
    }

    let caseChange: CaseChange
    let caseSensitive: Bool
    /// Case-sensitive: the stop words as they are; otherwise lowercased (onnxruntime compares
    /// lowercased words).
    let stopwords: Set<ByteString>

    /// The locales whose case mappings InferWire's (Unicode's simple mappings) are.
    static let locales: Set<String> = ["en_US", "en_US.UTF-8", "en_US.utf8", "en-US", "en-US.UTF-8"]

    init(_ c: inout NodeContext) throws {
        try c.require(inputs: 1...1)
        let action = try c.attributes.string("case_change_action", default: "NONE")
        guard let caseChange = CaseChange(rawValue: action) else {
            throw c.error("case_change_action '\(action)' is not LOWER, UPPER or NONE")
        }
        self.caseChange = caseChange
        let caseSensitive = try c.attributes.int("is_case_sensitive", default: 0) != 0
        self.caseSensitive = caseSensitive
        if let locale = try c.attributes.string("locale"), !Self.locales.contains(locale) {
            throw c.error(
                "locale '\(locale)' is not supported: InferWire changes case by Unicode's simple case mappings, as en_US.UTF-8 (onnxruntime's default) does, and other locales may map differently (Turkish i, for one)"
            )
        }
        let words = try c.attributes.strings("stopwords") ?? []
        self.stopwords = Set(words.map { ByteString(caseSensitive ? $0 : SimpleCase.lowercased($0)) })
    }

    func run(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor] {
        let x = try input(inputs, 0, "StringNormalizer")
        guard case .string(let strings) = x.storage else {
            throw OnnxError("StringNormalizer takes strings, got \(x.elementType)")
        }
        guard (x.rank == 1 && x.shape[0] > 0) || (x.rank == 2 && x.shape[0] == 1 && x.shape[1] > 0) else {
            throw OnnxError("StringNormalizer takes [C] or [1, C] strings with C > 0, got shape \(x.shape)")
        }
        var kept = strings
        if !self.stopwords.isEmpty {
            kept = strings.filter { word in
                !self.stopwords.contains(ByteString(self.caseSensitive ? word : SimpleCase.lowercased(word)))
            }
            if kept.isEmpty { kept = [""] }
        }
        switch self.caseChange {
        case .lower: kept = kept.map(SimpleCase.lowercased)
        case .upper: kept = kept.map(SimpleCase.uppercased)
        case .none: break
        }
        return [OnnxTensor(shape: x.rank == 2 ? [1, kept.count] : [kept.count], storage: .string(kept))]
    }
}

// MARK: - TfIdfVectorizer

/// TfIdfVectorizer-9: finds the pool's n-grams (with skips) in each row of X ([C] or
/// [B, C] of strings, INT32 or INT64) and scores them into Y ([E] or [B, E] floats, E the
/// largest of ngram_indexes plus one): TF counts, IDF gives an n-gram found its weight (or
/// 1), TFIDF adds its weight (or 1) for every time it is found. As in onnxruntime, weights
/// follow the pool's n-grams and several n-grams may share an output column: IDF then
/// keeps the weight of the one found last.
struct TfIdfVectorizer: Kernel {
    enum Mode: String {
        case tf = "TF"
        case idf = "IDF"
        case tfidf = "TFIDF"
    }

    /// The pool as a trie: `children[node][item]` is the node one item further on, and
    /// `ngram[node]` the id (position in the pool) of the n-gram ending there (-1: none).
    struct Trie<Item: Hashable>: Sendable where Item: Sendable {
        var children: [[Item: Int]] = [[:]]
        var ngram: [Int] = [-1]

        /// Adds an n-gram; false when it is already there.
        mutating func insert(_ items: some Sequence<Item>, id: Int) -> Bool {
            var node = 0
            for item in items {
                if let next = self.children[node][item] {
                    node = next
                } else {
                    self.children.append([:])
                    self.ngram.append(-1)
                    self.children[node][item] = self.children.count - 1
                    node = self.children.count - 1
                }
            }
            guard self.ngram[node] < 0 else { return false }
            self.ngram[node] = id
            return true
        }
    }

    enum Pool: Sendable {
        case strings(Trie<ByteString>)
        case integers(Trie<Int64>)
    }

    let mode: Mode
    let minGram: Int
    let maxGram: Int
    let maxSkip: Int
    let pool: Pool
    let outputSize: Int
    /// Each n-gram's output column, by id.
    let columns: [Int]
    /// Each n-gram's weight, by id; empty: 1.
    let weights: [Float]

    init(_ c: inout NodeContext) throws {
        try c.require(inputs: 1...1)
        func required(_ name: String) throws -> Int {
            guard let value = try c.attributes.int(name) else { throw c.error("attribute \(name) is required") }
            return value
        }
        let modeName = try c.attributes.string("mode")
        guard let modeName, let mode = Mode(rawValue: modeName) else {
            throw c.error("mode must be TF, IDF or TFIDF, got \(modeName.map { "'\($0)'" } ?? "none")")
        }
        self.mode = mode
        self.minGram = try required("min_gram_length")
        self.maxGram = try required("max_gram_length")
        self.maxSkip = try required("max_skip_count")
        let counts = try c.attributes.ints("ngram_counts") ?? []
        let indexes = try c.attributes.ints("ngram_indexes") ?? []
        let weights = try c.attributes.floats("weights")
        let strings = try c.attributes.strings("pool_strings")
        let integers = try c.attributes.int64s("pool_int64s")
        guard self.minGram > 0, self.maxGram >= self.minGram, self.maxGram <= 1 << 16 else {
            throw c.error("needs 0 < min_gram_length ≤ max_gram_length, got \(self.minGram) and \(self.maxGram)")
        }
        guard self.maxSkip >= 0, self.maxSkip <= 1 << 16 else {
            throw c.error("max_skip_count must be 0 or more, got \(self.maxSkip)")
        }
        guard !counts.isEmpty, self.maxGram <= counts.count else {
            throw c.error("ngram_counts (\(counts.count) values) must cover max_gram_length \(self.maxGram)")
        }
        guard !indexes.isEmpty, indexes.allSatisfy({ $0 >= 0 }), let largest = indexes.max(), largest < 1 << 31 else {
            throw c.error("ngram_indexes must be given, each 0 or more")
        }
        self.outputSize = largest + 1
        self.columns = indexes
        if let weights, weights.count != indexes.count {
            throw c.error("\(weights.count) weights for \(indexes.count) ngram_indexes")
        }
        self.weights = weights ?? []
        let total: Int
        if let strings {
            guard !strings.isEmpty else { throw c.error("pool_strings must not be empty") }
            total = strings.count
        } else {
            guard let integers, !integers.isEmpty else { throw c.error("pool_strings or pool_int64s is required") }
            total = integers.count
        }

        // Load the n-grams of the lengths counted: ngram_counts[n-1] is where the n-grams
        // start in the pool, and an n-gram's id (its position among all the pool's n-grams)
        // picks its output column from ngram_indexes.
        var stringTrie = Trie<ByteString>()
        var integerTrie = Trie<Int64>()
        var id = 0
        for (position, start) in counts.enumerated() {
            let size = position + 1
            let end = position + 1 < counts.count ? counts[position + 1] : total
            guard start >= 0, end >= start, end <= total else {
                throw c.error("ngram_counts put the \(size)-grams out of the pool's bounds")
            }
            guard (end - start) % size == 0 else {
                throw c.error("the pool's \(end - start) items do not make whole \(size)-grams")
            }
            let ngrams = (end - start) / size
            guard size >= self.minGram && size <= self.maxGram else {
                id += ngrams
                continue
            }
            for k in 0..<ngrams {
                guard id < indexes.count else {
                    throw c.error("the pool has more n-grams than ngram_indexes has entries (\(indexes.count))")
                }
                let from = start + k * size
                let inserted =
                    if let strings {
                        stringTrie.insert(strings[from..<(from + size)].map(ByteString.init), id: id)
                    } else {
                        integerTrie.insert(integers![from..<(from + size)], id: id)
                    }
                guard inserted else { throw c.error("the pool has a duplicate \(size)-gram") }
                id += 1
            }
        }
        self.pool = strings != nil ? .strings(stringTrie) : .integers(integerTrie)
    }

    func run(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor] {
        let x = try input(inputs, 0, "TfIdfVectorizer")
        guard x.rank <= 2 else { throw OnnxError("TfIdfVectorizer takes [C] or [B, C], got shape \(x.shape)") }
        if x.rank == 2 && x.shape[0] < 1 {
            throw OnnxError("TfIdfVectorizer takes [C] or [B, C] with B > 0, got shape \(x.shape)")
        }
        let rows = x.rank == 2 ? x.shape[0] : 1
        let columns = x.rank == 0 ? 1 : x.shape[x.rank - 1]
        let shape = x.rank == 2 ? [rows, self.outputSize] : [self.outputSize]
        _ = try checkedCount(shape, "TfIdfVectorizer output")
        var y = [Float](repeating: 0, count: rows * self.outputSize)
        // Items of a type the pool does not hold match nothing (onnxruntime's zeros).
        switch (x.storage, self.pool) {
        case (.string(let v), .strings(let trie)):
            self.score(v.map(ByteString.init), trie, rows: rows, columns: columns, into: &y)
        case (.int64(let v), .integers(let trie)):
            self.score(v, trie, rows: rows, columns: columns, into: &y)
        case (.int32(let v), .integers(let trie)):
            self.score(v.map(Int64.init), trie, rows: rows, columns: columns, into: &y)
        case (.string, _), (.int64, _), (.int32, _): break
        default: throw OnnxError("TfIdfVectorizer takes strings, INT32 or INT64, got \(x.elementType)")
        }
        return [OnnxTensor(shape: shape, floats: y)]
    }

    /// onnxruntime's search: 1-grams once, then every longer n-gram at every skip distance
    /// 1…max_skip_count+1 (items `distance` apart) from every start position, each n-gram
    /// found scored as it is found.
    private func score<Item>(_ items: [Item], _ trie: Trie<Item>, rows: Int, columns: Int, into y: inout [Float]) {
        for row in 0..<rows {
            let begin = row * columns
            let end = begin + columns
            let out = row * self.outputSize
            func found(_ id: Int) {
                let i = out + self.columns[id]
                let weight = self.weights.isEmpty ? 1 : self.weights[id]
                switch self.mode {
                case .tf: y[i] += 1
                case .idf: y[i] = weight
                case .tfidf: y[i] += weight
                }
            }
            var startSize = self.minGram
            if startSize == 1 {
                for i in begin..<end {
                    if let node = trie.children[0][items[i]], trie.ngram[node] >= 0 { found(trie.ngram[node]) }
                }
                startSize = 2
                if startSize > self.maxGram { continue }
            }
            for distance in 1...(self.maxSkip + 1) {
                for start in begin..<end {
                    if start + distance * (startSize - 1) >= end { break }
                    var node = 0
                    var size = 1
                    var i = start
                    while size <= self.maxGram && i < end {
                        guard let next = trie.children[node][items[i]] else { break }
                        node = next
                        if size >= startSize && trie.ngram[node] >= 0 { found(trie.ngram[node]) }
                        size += 1
                        i += distance
                    }
                }
            }
        }
    }
}

// MARK: - com.microsoft.Tokenizer

/// onnxruntime's Tokenizer (com.microsoft, opset 1): splits each string of X ([C] or [N, C])
/// into tokens, either the matches of `tokenexp` or the text between matches of
/// `separators` (applied one after another), keeping tokens of at least `mincharnum`
/// characters. Y is X's shape plus the largest token count: rows are padded with
/// `pad_value`, and with `mark` begin with "\u{2}" and end with "\u{3}" (before the pads).
/// When no string has a token, Y's last dimension is 0, marks or not. `separators` [""]
/// and `tokenexp` "." cut into characters.
struct Tokenizer: Kernel {
    enum Method: Sendable {
        case characters
        case expression(RE2Pattern)
        case separators([RE2Pattern])
    }

    let mark: Bool
    let pad: String
    let minimumCharacters: Int
    let method: Method

    init(_ c: inout NodeContext) throws {
        try c.require(inputs: 1...1)
        guard let mark = try c.attributes.int("mark") else { throw c.error("attribute mark is required") }
        guard let pad = try c.attributes.string("pad_value") else { throw c.error("attribute pad_value is required") }
        guard let minimum = try c.attributes.int("mincharnum") else {
            throw c.error("attribute mincharnum is required")
        }
        guard minimum > 0 else { throw c.error("mincharnum must be positive, got \(minimum)") }
        self.mark = mark != 0
        self.pad = pad
        self.minimumCharacters = minimum
        // separators win when both are given; tokenexp is then not even compiled.
        let separators = try c.attributes.strings("separators")
        let expression = try c.attributes.string("tokenexp")
        if let separators {
            guard !separators.isEmpty else { throw c.error("separators must not be empty") }
            if separators == [""] {
                self.method = .characters
            } else {
                do {
                    self.method = .separators(
                        try separators.map { s throws(OnnxError) in try RE2Pattern(s, what: "separator") })
                } catch {
                    throw c.error(error.message)
                }
            }
        } else {
            guard let expression else { throw c.error("either separators or tokenexp is required") }
            guard !expression.isEmpty else { throw c.error("tokenexp must not be empty") }
            if expression == "." {
                self.method = .characters
            } else {
                do {
                    self.method = .expression(try RE2Pattern(expression, what: "tokenexp"))
                } catch {
                    throw c.error(error.message)
                }
            }
        }
        if case .characters = self.method, minimum > 1 {
            throw c.error("mincharnum \(minimum) is too big for tokenizing into characters")
        }
    }

    func run(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor] {
        let x = try input(inputs, 0, "Tokenizer")
        guard case .string(let strings) = x.storage else {
            throw OnnxError("Tokenizer takes strings, got \(x.elementType)")
        }
        guard x.rank == 1 || x.rank == 2 else {
            throw OnnxError("Tokenizer takes [C] or [N, C] strings, got shape \(x.shape)")
        }
        if strings.isEmpty {
            return [OnnxTensor(shape: x.rank == 2 ? [x.shape[0], 0] : [0], storage: .string([]))]
        }
        let rows = strings.map(self.tokens)
        let most = rows.map(\.count).max() ?? 0
        guard most > 0 else { return [OnnxTensor(shape: x.shape + [0], storage: .string([]))] }
        let width = most + (self.mark ? 2 : 0)
        _ = try checkedCount(x.shape + [width], "Tokenizer output")
        var out: [String] = []
        out.reserveCapacity(rows.count * width)
        for row in rows {
            if self.mark { out.append("\u{2}") }
            out += row
            if self.mark { out.append("\u{3}") }
            out += repeatElement(self.pad, count: most - row.count)
        }
        return [OnnxTensor(shape: x.shape + [width], storage: .string(out))]
    }

    /// The tokens of one string.
    func tokens(_ s: String) -> [String] {
        switch self.method {
        case .characters:
            return s.unicodeScalars.map { String($0) }
        case .expression(let pattern):
            return self.matches(pattern, s)
        case .separators(let patterns):
            var pieces = [s]
            for pattern in patterns {
                pieces = pieces.flatMap { self.split($0, pattern) }
            }
            return pieces
        }
    }

    /// The matches of `tokenexp` of `mincharnum` characters or more. After a shorter one the
    /// search resumes one character past where it began, as onnxruntime's does.
    private func matches(_ pattern: RE2Pattern, _ s: String) -> [String] {
        let units = Array(s.utf16)
        var tokens: [String] = []
        pattern.walk(units) { match in
            let token = Self.text(units, match)
            if token.unicodeScalars.count >= self.minimumCharacters {
                tokens.append(token)
                return NSMaxRange(match)
            }
            return Self.afterCharacter(units, at: match.location)
        }
        return tokens
    }

    /// The pieces of `s` between matches of a separator, of `mincharnum` characters or
    /// more. An empty match skips the character after it, and one at the very end leaves
    /// no trailing piece, as in onnxruntime.
    private func split(_ s: String, _ pattern: RE2Pattern) -> [String] {
        let units = Array(s.utf16)
        var pieces: [String] = []
        func keep(_ range: NSRange) {
            let piece = Self.text(units, range)
            if piece.unicodeScalars.count >= self.minimumCharacters { pieces.append(piece) }
        }
        var start = 0
        let last = pattern.walk(units) { match in
            keep(NSRange(location: start, length: match.location - start))
            start = match.length > 0 ? NSMaxRange(match) : Self.afterCharacter(units, at: match.location)
            return start
        }
        if last <= units.count { keep(NSRange(location: last, length: units.count - last)) }
        return pieces
    }

    static func text(_ units: [UInt16], _ range: NSRange) -> String {
        String(decoding: units[range.location..<NSMaxRange(range)], as: UTF16.self)
    }

    /// The UTF-16 offset one character (scalar) after `offset`; past the end, one more.
    static func afterCharacter(_ units: [UInt16], at offset: Int) -> Int {
        guard offset < units.count else { return offset + 1 }
        return UTF16.isLeadSurrogate(units[offset]) && offset + 1 < units.count ? offset + 2 : offset + 1
    }
}
