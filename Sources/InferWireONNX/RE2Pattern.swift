import Foundation

/// A regular expression in RE2's syntax, matched as onnxruntime's com.microsoft.Tokenizer
/// matches its `tokenexp` and `separators` (RE2 with `longest_match`: of the matches that
/// start leftmost, the longest), run with Foundation's NSRegularExpression (ICU).
///
/// The pattern is translated rather than handed to ICU as written, where the two differ:
/// `\w`, `\d`, `\s`, `\b`, `\B` and the POSIX classes are ASCII-only in RE2 (so
/// `[a-zA-Z0-9_]+` and `\w+` both cut "café" to "caf"), `.` excludes only `\n`, `$` matches
/// only at the end (or before `\n` under `(?m)`), `[a&&b]` is three characters, and
/// laziness means nothing under longest matching. Constructs RE2 rejects (lookaround,
/// backreferences, `(?u)`, `\Z`, …) are refused, as onnxruntime refuses them.
///
/// ICU matches leftmost-first; the two agree when every alternative of the pattern is a
/// sequence of single characters or classes, each possibly repeated, and zero-width
/// assertions (checked against onnxruntime: see the tests). Patterns of that form are run
/// directly, with the longest of the alternatives that match at the leftmost start; others
/// (a repeated group, an alternation inside a sequence) are refused at load.
///
/// Sendable: NSRegularExpression is immutable and safe to use from several threads.
final class RE2Pattern: @unchecked Sendable {
    private let whole: NSRegularExpression
    /// Each top-level alternative, when there is more than one.
    private let alternatives: [NSRegularExpression]

    private static let options: NSRegularExpression.MatchingOptions = [.withTransparentBounds, .withoutAnchoringBounds]

    /// - Parameter what: names the pattern in errors ("tokenexp", "separator").
    init(_ pattern: String, what: String) throws(OnnxError) {
        func refuse(_ why: String) -> OnnxError { OnnxError("\(what) '\(pattern)': \(why)") }
        var parser = RE2Parser(scalars: Array(pattern.unicodeScalars))
        let tree: [[RE2Parser.Node]]
        do {
            tree = try parser.parse()
        } catch {
            throw refuse("not a valid RE2 expression, which onnxruntime refuses too: \(error.message)")
        }
        var branches = tree
        while branches.count == 1, branches[0].count == 1, case .group(let inner) = branches[0][0] {
            branches = inner
        }
        var flattened: [[RE2Parser.Node]] = []
        for branch in branches {
            guard let flat = RE2Parser.flatten(branch) else {
                throw refuse(
                    "onnxruntime takes the longest match and ICU the first; InferWire runs expressions whose alternatives are sequences of characters, classes, their repetitions and assertions, where the two agree, and this one repeats or alternates inside a group"
                )
            }
            flattened.append(flat)
        }
        let texts = flattened.map { $0.map(\.icu).joined() }
        func compile(_ text: String) throws(OnnxError) -> NSRegularExpression {
            do {
                return try NSRegularExpression(pattern: text.isEmpty ? "(?:)" : text)
            } catch {
                throw refuse("ICU does not accept its translation '\(text)': \(error)")
            }
        }
        self.whole = try compile(texts.count == 1 ? texts[0] : texts.map { "(?:\($0))" }.joined(separator: "|"))
        self.alternatives = texts.count == 1 ? [] : try texts.map { text throws(OnnxError) in try compile(text) }
    }

    /// Walks the matches RE2's `Match(text, start, end, UNANCHORED)` finds, as a caller
    /// that loops over it sees them: `step` gets each match (a range of `text`'s UTF-16
    /// units) and returns where the next search starts; past the end ends the walk. Returns
    /// where the last search started, the one that found nothing (or a position past the end).
    @discardableResult
    func walk(_ text: [UInt16], _ step: (NSRange) -> Int) -> Int {
        // The enumeration's block is declared escaping but runs before it returns.
        withoutActuallyEscaping(step) { step in self.walk(text, escaping: step) }
    }

    /// Units of text ICU is given at once. Each call hands ICU a whole string, so searching a
    /// long text from many positions would cost its length every time: ICU searches windows
    /// instead, trusting a result only when it did not reach the window's end.
    static let window = 1024

    /// A stretch of the text as a string for ICU, from one character before `start` (what
    /// the translated assertions look back at) to about `size` units after it.
    struct Window {
        let offset: Int
        let text: String
        let count: Int
        /// Whether it runs to the end of the text, so that reaching its end is no truncation.
        let isLast: Bool

        init(_ units: [UInt16], from start: Int, size: Int) {
            var first = max(0, start - 1)
            if first > 0 && UTF16.isTrailSurrogate(units[first]) { first -= 1 }
            var end = min(units.count, start + size)
            if end < units.count && UTF16.isTrailSurrogate(units[end]) { end += 1 }
            self.offset = first
            self.text = String(decoding: units[first..<end], as: UTF16.self)
            self.count = end - first
            self.isLast = end == units.count
        }
    }

    private func walk(_ units: [UInt16], escaping step: @escaping (NSRange) -> Int) -> Int {
        let length = units.count
        var start = 0
        var size = Self.window
        while start <= length {
            let window = Window(units, from: start, size: size)
            var expected = start
            var restart: Int? = nil
            var truncated = false
            // One enumeration follows ICU's own continuation; it stops where the caller resumes
            // somewhere ICU would not (before a rejected match's end, or where ICU skipped
            // ahead by returning a match that starts too early), and where the window ends.
            self.whole.enumerateMatches(
                in: window.text, options: Self.options,
                range: NSRange(location: start - window.offset, length: window.count - (start - window.offset))
            ) { result, flags, stop in
                guard let result else { return }
                if flags.contains(.hitEnd) && !window.isLast {
                    truncated = true
                    stop.pointee = true
                    return
                }
                let found = NSRange(location: result.range.location + window.offset, length: result.range.length)
                if found.location < expected {
                    restart = expected
                    stop.pointee = true
                    return
                }
                let next = step(self.longest(found, in: units))
                expected = next
                if next < NSMaxRange(found) || next >= window.offset + window.count {
                    restart = next
                    stop.pointee = true
                }
            }
            if truncated || (restart == nil && !window.isLast) {
                // The search from `expected` reached the window's end: search again from there,
                // in a larger window when this one gave nothing.
                size = expected == start ? size * 2 : Self.window
                start = expected
                continue
            }
            guard let restart else { return expected }
            size = Self.window
            start = restart
        }
        return start
    }

    /// The longest match starting where `found` (ICU's first match there) starts.
    private func longest(_ found: NSRange, in units: [UInt16]) -> NSRange {
        guard !self.alternatives.isEmpty else { return found }
        var best = found
        for alternative in self.alternatives {
            var size = 64
            while true {
                let window = Window(units, from: found.location, size: size)
                var match: NSRange? = nil
                var truncated = false
                alternative.enumerateMatches(
                    in: window.text, options: Self.options.union([.anchored, .reportCompletion]),
                    range: NSRange(
                        location: found.location - window.offset,
                        length: window.count - (found.location - window.offset))
                ) { result, flags, stop in
                    match = result?.range
                    truncated = flags.contains(.hitEnd) && !window.isLast
                    stop.pointee = true
                }
                if truncated {
                    size *= 2
                    continue
                }
                if let match, match.length > best.length {
                    best = NSRange(location: match.location + window.offset, length: match.length)
                }
                break
            }
        }
        return best
    }
}

/// RE2's syntax, parsed into what ICU needs.
struct RE2Parser {
    indirect enum Node {
        /// An ICU fragment matching exactly one character.
        case char(String)
        /// An ICU fragment matching the empty string at certain positions.
        case assertion(String)
        /// Alternatives, each a sequence.
        case group([[Node]])
        case repeated(Node, min: Int, max: Int?)

        /// The node's ICU text (groups become non-capturing; every repetition greedy,
        /// laziness being moot under longest matching).
        var icu: String {
            switch self {
            case .char(let s), .assertion(let s): return s
            case .group(let branches):
                return "(?:" + branches.map { $0.map(\.icu).joined() }.joined(separator: "|") + ")"
            case .repeated(let node, let min, let max):
                let body = node.icu
                switch (min, max) {
                case (0, nil): return body + "*"
                case (1, nil): return body + "+"
                case (0, 1?): return body + "?"
                case (_, nil): return body + "{\(min),}"
                case (_, let max?): return min == max ? body + "{\(min)}" : body + "{\(min),\(max)}"
                }
            }
        }
    }

    struct Flags {
        var caseless = false
        var multiline = false
        var dotMatchesNewline = false
    }

    let scalars: [Unicode.Scalar]
    var i = 0

    init(scalars: [Unicode.Scalar]) { self.scalars = scalars }

    /// A sequence of characters, classes, repetitions of one of those, and assertions,
    /// with groups of one alternative spliced in; nil when the pattern has more.
    static func flatten(_ sequence: [Node]) -> [Node]? {
        var out: [Node] = []
        for node in sequence {
            switch node {
            case .char, .assertion: out.append(node)
            case .group(let branches):
                guard branches.count == 1, let inner = flatten(branches[0]) else { return nil }
                out += inner
            case .repeated(let inner, let min, let max):
                guard let single = flatten([inner]), single.count == 1, case .char = single[0] else { return nil }
                out.append(.repeated(single[0], min: min, max: max))
            }
        }
        return out
    }

    // MARK: Parsing

    static let word = "[\\x{30}-\\x{39}\\x{41}-\\x{5a}\\x{5f}\\x{61}-\\x{7a}]"
    static let anything = "[\\s\\S]"

    mutating func parse() throws(OnnxError) -> [[Node]] {
        var flags = Flags()
        let branches = try self.alternation(&flags, depth: 0)
        if self.i < self.scalars.count { throw OnnxError("unexpected ): \(self.rest)") }
        return branches
    }

    private var rest: String {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: self.scalars[min(self.i, self.scalars.count)...])
        return String(s)
    }

    private func peek(_ offset: Int = 0) -> Unicode.Scalar? {
        self.i + offset < self.scalars.count ? self.scalars[self.i + offset] : nil
    }

    /// Alternatives up to a `)` (left unread) or the end.
    private mutating func alternation(_ flags: inout Flags, depth: Int) throws(OnnxError) -> [[Node]] {
        var branches: [[Node]] = [[]]
        // Whether the last thing read can take a repetition operator.
        var repeatable = false
        var lastWasRepetition = false
        while let c = self.peek() {
            switch c {
            case "|":
                self.i += 1
                branches.append([])
                repeatable = false
                lastWasRepetition = false
                continue
            case ")":
                guard depth > 0 else { throw OnnxError("unexpected ): missing (") }
                return branches
            case "*", "+", "?", "{":
                var repetition: (min: Int, max: Int?)
                let start = self.i
                if c == "{" {
                    guard let counted = self.counted() else {
                        branches[branches.count - 1].append(Self.literal(c, flags))
                        self.i += 1
                        repeatable = true
                        lastWasRepetition = false
                        continue
                    }
                    repetition = counted
                } else {
                    self.i += 1
                    repetition = c == "*" ? (0, nil) : c == "+" ? (1, nil) : (0, 1)
                }
                let text = self.text(start..<self.i)
                guard repeatable, !lastWasRepetition else {
                    throw OnnxError(
                        lastWasRepetition
                            ? "bad repetition operator: \(text)" : "missing argument to repetition operator: \(text)")
                }
                if repetition.min > 1000 || (repetition.max ?? 0) > 1000 || (repetition.max ?? .max) < repetition.min {
                    throw OnnxError("invalid repetition size: \(text)")
                }
                if self.peek() == "?" { self.i += 1 }  // lazy: the same under longest matching
                let last = branches[branches.count - 1].removeLast()
                branches[branches.count - 1].append(.repeated(last, min: repetition.min, max: repetition.max))
                lastWasRepetition = true
                continue
            case "(":
                if let node = try self.group(&flags, depth: depth) {
                    branches[branches.count - 1].append(node)
                    repeatable = true
                } else {
                    repeatable = false
                }
            case "[":
                branches[branches.count - 1].append(.char(try self.characterClass(flags)))
                repeatable = true
            case ".":
                self.i += 1
                branches[branches.count - 1].append(
                    .char(flags.dotMatchesNewline ? Self.anything : "[^\\x{a}]"))
                repeatable = true
            case "^":
                self.i += 1
                branches[branches.count - 1].append(
                    .assertion(flags.multiline ? "(?<![^\\x{a}])" : "(?<!\(Self.anything))"))
                repeatable = true
            case "$":
                self.i += 1
                branches[branches.count - 1].append(
                    .assertion(flags.multiline ? "(?![^\\x{a}])" : "(?!\(Self.anything))"))
                repeatable = true
            case "\\":
                branches[branches.count - 1] += try self.escape(flags)
                repeatable = true
            default:
                self.i += 1
                branches[branches.count - 1].append(Self.literal(c, flags))
                repeatable = true
            }
            lastWasRepetition = false
        }
        return branches
    }

    private func text(_ range: Range<Int>) -> String {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: self.scalars[range])
        return String(s)
    }

    /// `{n}`, `{n,}` or `{n,m}` at the current position (read), or nil (nothing read): a
    /// `{` that starts none of them is a literal in RE2.
    private mutating func counted() -> (min: Int, max: Int?)? {
        var j = self.i + 1
        func number() -> Int? {
            var value = 0
            var digits = 0
            while j < self.scalars.count, let d = Int(String(self.scalars[j])), self.scalars[j].isASCII {
                value = min(value * 10 + d, 100_000)
                digits += 1
                j += 1
            }
            return digits > 0 ? value : nil
        }
        guard let low = number() else { return nil }
        var high: Int? = low
        if j < self.scalars.count, self.scalars[j] == "," {
            j += 1
            high = number()
        }
        guard j < self.scalars.count, self.scalars[j] == "}" else { return nil }
        self.i = j + 1
        return (low, high)
    }

    /// A group, read through its `)`; nil for a flag setting such as `(?i)`.
    private mutating func group(_ flags: inout Flags, depth: Int) throws(OnnxError) -> Node? {
        let start = self.i
        self.i += 1  // (
        var inner = flags
        if self.peek() == "?" {
            self.i += 1
            switch self.peek() {
            case "P" where self.peek(1) == "<", "<" where self.peek(1) != "=" && self.peek(1) != "!":
                // A named capture: (?P<name>…) or (?<name>…).
                while let c = self.peek(), c != ">" { self.i += 1 }
                guard self.peek() == ">" else {
                    throw OnnxError("invalid named capture group: \(self.text(start..<self.i))")
                }
                self.i += 1
            default:
                // Flags: (?i) (?i-s) (?i:…) …
                var negated = false
                var sawFlag = false
                while true {
                    guard let c = self.peek() else {
                        throw OnnxError("missing closing ): \(self.text(start..<self.i))")
                    }
                    self.i += 1
                    switch c {
                    case "i": inner.caseless = !negated
                    case "m": inner.multiline = !negated
                    case "s": inner.dotMatchesNewline = !negated
                    case "U": break  // ungreedy: moot under longest matching
                    case "-" where !negated: negated = true
                    case ":", ")":
                        guard sawFlag || c == ":", !(negated && !sawFlag) else {
                            throw OnnxError("invalid or unsupported Perl syntax: \(self.text(start..<self.i))")
                        }
                        if c == ")" {
                            flags = inner
                            return nil
                        }
                        let branches = try self.alternation(&inner, depth: depth + 1)
                        guard self.peek() == ")" else { throw OnnxError("missing ): \(self.text(start..<self.i))") }
                        self.i += 1
                        return .group(branches)
                    default:
                        throw OnnxError(
                            "invalid or unsupported Perl syntax: \(self.text(start..<self.i)) (lookaround, backreferences and flags other than i, m, s and U are not RE2)"
                        )
                    }
                    if c != "-" { sawFlag = true }
                }
            }
        }
        let branches = try self.alternation(&inner, depth: depth + 1)
        guard self.peek() == ")" else { throw OnnxError("missing ): \(self.text(start..<self.i))") }
        self.i += 1
        return .group(branches)
    }

    static func hex(_ value: UInt32) -> String { "\\x{" + String(value, radix: 16) + "}" }

    static func literal(_ c: Unicode.Scalar, _ flags: Flags) -> Node {
        .char(flags.caseless ? "(?i:\(hex(c.value)))" : hex(c.value))
    }

    /// `\d`, `\s`, `\w` and their negations, ASCII-only as in RE2, as bracket sets.
    static func perlClass(_ c: Unicode.Scalar) -> String? {
        let body: String
        switch c {
        case "d", "D": body = "\\x{30}-\\x{39}"
        case "s", "S": body = "\\x{9}\\x{a}\\x{c}\\x{d}\\x{20}"
        case "w", "W": body = "\\x{30}-\\x{39}\\x{41}-\\x{5a}\\x{5f}\\x{61}-\\x{7a}"
        default: return nil
        }
        return (c.properties.isUppercase ? "[^" : "[") + body + "]"
    }

    /// RE2's POSIX classes (ASCII).
    static let posixClasses: [String: String] = [
        "alnum": "\\x{30}-\\x{39}\\x{41}-\\x{5a}\\x{61}-\\x{7a}", "alpha": "\\x{41}-\\x{5a}\\x{61}-\\x{7a}",
        "ascii": "\\x{0}-\\x{7f}", "blank": "\\x{9}\\x{20}", "cntrl": "\\x{0}-\\x{1f}\\x{7f}",
        "digit": "\\x{30}-\\x{39}", "graph": "\\x{21}-\\x{7e}", "lower": "\\x{61}-\\x{7a}",
        "print": "\\x{20}-\\x{7e}", "punct": "\\x{21}-\\x{2f}\\x{3a}-\\x{40}\\x{5b}-\\x{60}\\x{7b}-\\x{7e}",
        "space": "\\x{9}-\\x{d}\\x{20}", "upper": "\\x{41}-\\x{5a}",
        "word": "\\x{30}-\\x{39}\\x{41}-\\x{5a}\\x{5f}\\x{61}-\\x{7a}",
        "xdigit": "\\x{30}-\\x{39}\\x{41}-\\x{46}\\x{61}-\\x{66}",
    ]

    /// `\pN`, `\p{Name}`, `\PN`, `\p{^Name}` after the backslash (at `p`/`P`).
    private mutating func unicodeClass() throws(OnnxError) -> String {
        let start = self.i - 1
        var negated = self.scalars[self.i] == "P"
        self.i += 1
        guard let c = self.peek() else { throw OnnxError("invalid character class range: \\p") }
        var name: String
        if c == "{" {
            self.i += 1
            var s = ""
            while let c = self.peek(), c != "}" {
                s.unicodeScalars.append(c)
                self.i += 1
            }
            guard self.peek() == "}" else {
                throw OnnxError("invalid character class range: \(self.text(start..<self.i))")
            }
            self.i += 1
            name = s
        } else {
            self.i += 1
            name = String(c)
        }
        if name.hasPrefix("^") {
            negated.toggle()
            name.removeFirst()
        }
        guard !name.isEmpty, name.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || $0 == "_") })
        else {
            throw OnnxError("invalid character class range: \(self.text(start..<self.i))")
        }
        return (negated ? "\\P{" : "\\p{") + name + "}"
    }

    /// The value of a character escape after the backslash (at the escaped character):
    /// `\n`, `\x41`, `\x{263a}`, `\012`, `\.`; nil (nothing read) when it is not one.
    private mutating func characterEscape() throws(OnnxError) -> Unicode.Scalar? {
        guard let c = self.peek() else { throw OnnxError("trailing \\") }
        let simple: [Unicode.Scalar: UInt32] = ["a": 7, "f": 12, "t": 9, "n": 10, "r": 13, "v": 11]
        if let value = simple[c] {
            self.i += 1
            return Unicode.Scalar(value)
        }
        func octal(_ s: Unicode.Scalar?) -> UInt32? {
            guard let s, s.value >= 0x30, s.value <= 0x37 else { return nil }
            return s.value - 0x30
        }
        if let first = octal(c) {
            // \0, \0N, \0NN; \1–\7 only followed by another octal digit (alone, a backreference).
            guard first == 0 || octal(self.peek(1)) != nil else { throw OnnxError("invalid escape sequence: \\\(c)") }
            var value: UInt32 = 0
            var digits = 0
            while digits < 3, let d = octal(self.peek()) {
                value = value * 8 + d
                digits += 1
                self.i += 1
            }
            return Unicode.Scalar(value)
        }
        if c == "x" {
            self.i += 1
            var digits = ""
            if self.peek() == "{" {
                self.i += 1
                while let d = self.peek(), d != "}" {
                    digits.unicodeScalars.append(d)
                    self.i += 1
                }
                guard self.peek() == "}" else { throw OnnxError("invalid escape sequence: \\x{\(digits)") }
                self.i += 1
            } else {
                for _ in 0..<2 {
                    guard let d = self.peek() else { break }
                    digits.unicodeScalars.append(d)
                    self.i += 1
                }
                guard digits.count == 2 else { throw OnnxError("invalid escape sequence: \\x\(digits)") }
            }
            guard !digits.isEmpty, let value = UInt32(digits, radix: 16), let scalar = Unicode.Scalar(value) else {
                throw OnnxError("invalid escape sequence: \\x\(digits)")
            }
            return scalar
        }
        if c.isASCII && !c.properties.isAlphabetic && !("0"..."9").contains(c) && c != "_" {
            self.i += 1
            return c  // escaped punctuation
        }
        return nil
    }

    /// An escape outside a class (at the backslash).
    private mutating func escape(_ flags: Flags) throws(OnnxError) -> [Node] {
        self.i += 1
        guard let c = self.peek() else { throw OnnxError("trailing \\") }
        if let scalar = try self.characterEscape() { return [Self.literal(scalar, flags)] }
        if let set = Self.perlClass(c) {
            self.i += 1
            return [.char(flags.caseless ? "(?i:\(set))" : set)]
        }
        let word = Self.word
        switch c {
        case "p", "P":
            let set = try self.unicodeClass()
            return [.char(flags.caseless ? "(?i:\(set))" : set)]
        case "b":
            self.i += 1
            return [.assertion("(?:(?<=\(word))(?!\(word))|(?<!\(word))(?=\(word)))")]
        case "B":
            self.i += 1
            return [.assertion("(?:(?<=\(word))(?=\(word))|(?<!\(word))(?!\(word)))")]
        case "A":
            self.i += 1
            return [.assertion("(?<!\(Self.anything))")]
        case "z":
            self.i += 1
            return [.assertion("(?!\(Self.anything))")]
        case "Q":
            // Literal text up to \E or the end.
            self.i += 1
            var nodes: [Node] = []
            while let d = self.peek() {
                if d == "\\", self.peek(1) == "E" {
                    self.i += 2
                    break
                }
                if d == "\\", self.peek(1) == "\\" { self.i += 1 }
                nodes.append(Self.literal(self.scalars[self.i], flags))
                self.i += 1
            }
            // A repetition after \Q…\E applies to its last character only.
            return nodes.isEmpty ? [.group([[]])] : nodes
        case "C":
            throw OnnxError("\\C (any byte) is not supported: it splits UTF-8 characters")
        default:
            throw OnnxError("invalid escape sequence: \\\(c)")
        }
    }

    /// A bracketed class (at `[`), as an ICU set with every member escaped.
    private mutating func characterClass(_ flags: Flags) throws(OnnxError) -> String {
        let start = self.i
        self.i += 1
        var negated = false
        if self.peek() == "^" {
            negated = true
            self.i += 1
        }
        var items = ""
        var first = true
        while true {
            guard let c = self.peek() else { throw OnnxError("missing ]: \(self.text(start..<self.i))") }
            if c == "]" && !first {
                self.i += 1
                break
            }
            first = false
            if c == "[", self.peek(1) == ":" {
                var j = self.i + 2
                var name = ""
                while j < self.scalars.count, self.scalars[j] != ":" {
                    name.unicodeScalars.append(self.scalars[j])
                    j += 1
                }
                if j + 1 < self.scalars.count, self.scalars[j + 1] == "]" {
                    let positive = name.hasPrefix("^") ? String(name.dropFirst()) : name
                    guard let body = Self.posixClasses[positive] else {
                        throw OnnxError("invalid character class range: [:\(name):]")
                    }
                    items += (name.hasPrefix("^") ? "[^" : "[") + body + "]"
                    self.i = j + 2
                    continue
                }
            }
            // One member: a class escape, or a character that may start a range.
            let low: Unicode.Scalar
            if c == "\\" {
                self.i += 1
                guard let e = self.peek() else { throw OnnxError("trailing \\") }
                if let scalar = try self.characterEscape() {
                    low = scalar
                } else if let set = Self.perlClass(e) {
                    self.i += 1
                    items += set
                    continue
                } else if e == "p" || e == "P" {
                    items += try self.unicodeClass()
                    continue
                } else {
                    throw OnnxError("invalid escape sequence: \\\(e)")
                }
            } else {
                low = c
                self.i += 1
            }
            if self.peek() == "-", let next = self.peek(1), next != "]" {
                self.i += 1
                let high: Unicode.Scalar
                if next == "\\" {
                    self.i += 1
                    guard let scalar = try self.characterEscape() else {
                        throw OnnxError("invalid character class range: \(self.text(start..<self.i))")
                    }
                    high = scalar
                } else {
                    high = next
                    self.i += 1
                }
                guard high.value >= low.value else {
                    throw OnnxError("invalid character class range: \(low)-\(high)")
                }
                items += Self.hex(low.value) + "-" + Self.hex(high.value)
            } else {
                items += Self.hex(low.value)
            }
        }
        let set = (negated ? "[^" : "[") + items + "]"
        return flags.caseless ? "(?i:\(set))" : set
    }
}
