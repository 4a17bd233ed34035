import Foundation

/// The kernel of an SVMClassifier or SVMRegressor: K(x, v) for every input row x and every
/// support vector v, computed as onnxruntime computes it (`svmclassifier.h`, `SVMCommon`):
/// LINEAR x·v, POLY (γ x·v + c₀)^d, RBF exp(−γ‖x − v‖²), SIGMOID tanh(γ x·v + c₀), in FP32.
struct SVMKernel: Sendable {
    enum Kind: String, Sendable {
        case linear = "LINEAR"
        case poly = "POLY"
        case rbf = "RBF"
        case sigmoid = "SIGMOID"
    }

    var kind: Kind
    var gamma: Float = 0
    var coef0: Float = 0
    var degree: Float = 0

    init(kind: Kind) { self.kind = kind }

    init(_ c: inout NodeContext) throws {
        let name = try c.attributes.string("kernel_type", default: "LINEAR")
        guard let kind = Kind(rawValue: name) else { throw c.error("kernel_type '\(name)' is not supported") }
        self.kind = kind
        if let parameters = try c.attributes.floats("kernel_params"), !parameters.isEmpty {
            guard parameters.count == 3 else {
                throw c.error("kernel_params needs 3 values (gamma, coef0, degree), got \(parameters.count)")
            }
            (self.gamma, self.coef0, self.degree) = (parameters[0], parameters[1], parameters[2])
        }
    }

    /// K(xᵣ, vⱼ) for the `rows` rows of `x` and the `count` rows of `vectors`, each of
    /// `features` values: [rows, count]. `offset` is added to the LINEAR kernel's values
    /// (the intercept of the linear forms without support vectors).
    func evaluate(_ x: [Float], rows: Int, _ vectors: [Float], count: Int, features: Int, offset: Float = 0)
        -> [Float]
    {
        var out = [Float](repeating: 0, count: rows * count)
        guard rows > 0, count > 0 else { return out }
        if self.kind == .rbf {
            x.withUnsafeBufferPointer { px in
                vectors.withUnsafeBufferPointer { pv in
                    out.withUnsafeMutableBufferPointer { po in
                        for r in 0..<rows {
                            let row = r * features
                            for j in 0..<count {
                                let vector = j * features
                                var sum: Float = 0
                                for f in 0..<features {
                                    let d = px[row + f] - pv[vector + f]
                                    sum += d * d
                                }
                                po[r * count + j] = expf(-self.gamma * sum)
                            }
                        }
                    }
                }
            }
            return out
        }
        let linear = self.kind == .linear
        let constant = linear ? offset : self.coef0
        if constant != 0 { for i in out.indices { out[i] = constant } }
        if features > 0 {
            x.withUnsafeBufferPointer { px in
                vectors.withUnsafeBufferPointer { pv in
                    out.withUnsafeMutableBufferPointer { po in
                        sgemm(
                            px.baseAddress!, pv.baseAddress!, po.baseAddress!, m: rows, n: count, k: features,
                            transB: true, alpha: linear ? 1 : self.gamma, beta: 1)
                    }
                }
            }
        }
        switch self.kind {
        case .poly:
            if self.degree == 2 {
                for i in out.indices { out[i] *= out[i] }
            } else if self.degree == 3 {
                for i in out.indices { out[i] = out[i] * out[i] * out[i] }
            } else {
                for i in out.indices { out[i] = powf(out[i], self.degree) }
            }
        case .sigmoid: for i in out.indices { out[i] = tanhf(out[i]) }
        case .linear, .rbf: break
        }
        return out
    }
}

/// Input features of an SVM as FP32 rows: [N, F] or one row [F].
/// X's rows; `perRow` is the most values a row needs (kernel values, scores), checked against
/// the tensor limit before anything is allocated for the batch.
private func svmRows(_ x: OnnxTensor, features: Int, perRow: Int, op: String) throws -> (values: [Float], rows: Int) {
    guard x.rank == 1 || x.rank == 2 else { throw OnnxError("\(op) takes X of shape [N, F] or [F], got \(x.shape)") }
    let (values, rows, columns) = try featureRows(x, op)
    guard columns == features else { throw OnnxError("\(op): X has \(columns) features, the model \(features)") }
    _ = try checkedCount([rows, perRow], "\(op)'s values for \(rows) rows")
    return (values, rows)
}

/// onnxruntime's score arithmetic for the SVM classifier (`ml_common.h`), in FP32, so that
/// scores and probabilities agree with it to the last bits rather than only to the formula.
enum OrtScores {
    /// `ComputeLogistic`.
    static func logistic(_ value: Float) -> Float {
        let v = 1 / (1 + expf(-abs(value)))
        return value < 0 ? 1 - v : v
    }

    /// `ComputeProbit`: √2 · erf⁻¹(2p − 1), with onnxruntime's closed-form approximation of erf⁻¹.
    static func probit(_ value: Float) -> Float {
        var x = 2 * value - 1
        let sign: Float = x < 0 ? -1 : 1
        x = (1 - x) * (1 + x)
        let l = logf(x)
        let v = 2 / (Float(Double.pi) * 0.147) + 0.5 * l
        let v2 = 1 / Float(0.147) * l
        let v3 = -v + (v * v - v2).squareRoot()
        return Float(2.0.squareRoot()) * (sign * v3.squareRoot())
    }

    /// `sigmoid_probability`: Platt scaling of one pairwise decision value (libsvm's sigmoid_predict).
    static func plattProbability(_ score: Float, _ a: Float, _ b: Float) -> Float {
        1 - logistic(score * a + b)
    }

    /// `multiclass_probability`: libsvm's pairwise coupling (Wu, Lin and Weng 2004, method 2)
    /// of the k×k matrix `r` of pairwise probabilities into k class probabilities.
    static func coupled(_ k: Int, _ r: [Float]) -> [Float] {
        var q = [Float](repeating: 0, count: k * k)
        var qp = [Float](repeating: 0, count: k)
        var p = [Float](repeating: 0, count: k)
        let eps = 0.005 / Float(k)
        for i in 0..<k {
            p[i] = 1 / Float(k)
            for j in 0..<i {
                q[i * k + i] += r[j * k + i] * r[j * k + i]
                q[i * k + j] = q[j * k + i]
            }
            for j in (i + 1)..<k {
                q[i * k + i] += r[j * k + i] * r[j * k + i]
                q[i * k + j] = -r[j * k + i] * r[i * k + j]
            }
        }
        for _ in 0..<100 {
            var pqp: Float = 0
            for i in 0..<k {
                qp[i] = 0
                for j in 0..<k { qp[i] += q[i * k + j] * p[j] }
                pqp += p[i] * qp[i]
            }
            var maxError: Float = 0
            for i in 0..<k {
                let error = abs(qp[i] - pqp)
                if error > maxError { maxError = error }
            }
            if maxError < eps { break }
            for i in 0..<k {
                let diff = (-qp[i] + pqp) / q[i * k + i]
                p[i] += diff
                pqp = (pqp + diff * (diff * q[i * k + i] + 2 * qp[i])) / (1 + diff) / (1 + diff)
                for j in 0..<k {
                    qp[j] = (qp[j] + diff * q[i * k + j]) / (1 + diff)
                    p[j] /= (1 + diff)
                }
            }
        }
        return p
    }

    /// `batched_update_scores_inplace` for one row whose first `count` values are scores:
    /// the post-transform across them, or for a single score (`count` 1) its expansion into
    /// two columns when `secondClass` is 0…3 (0, 1: [1 − s, s], with p = logistic(s) for s
    /// under LOGISTIC; 2, 3: [−s, s], or the logistic of both under LOGISTIC); PROBIT
    /// transforms a single score in place, leaving the second column as it was.
    static func update(_ row: inout [Float], count: Int, _ transform: PostTransform, secondClass: Int) {
        guard count >= 1 else { return }
        if count > 1 {
            switch transform {
            case .none: break
            case .probit: for i in 0..<count { row[i] = probit(row[i]) }
            case .logistic: for i in 0..<count { row[i] = logistic(row[i]) }
            case .softmax:
                var m = -Float.greatestFiniteMagnitude
                for i in 0..<count where row[i] > m { m = row[i] }
                var sum: Float = 0
                for i in 0..<count {
                    row[i] = expf(row[i] - m)
                    sum += row[i]
                }
                for i in 0..<count { row[i] /= sum }
            case .softmaxZero:
                var m = -Float.greatestFiniteMagnitude
                for i in 0..<count where row[i] > m { m = row[i] }
                let scale = expf(-m)
                var sum: Float = 0
                for i in 0..<count {
                    if row[i] > 0.0000001 || row[i] < -0.0000001 {
                        row[i] = expf(row[i] - m)
                        sum += row[i]
                    } else {
                        row[i] *= scale
                    }
                }
                for i in 0..<count { row[i] /= sum }
            }
            return
        }
        let s = row[0]
        if transform == .probit {
            row[0] = probit(s)
        } else if secondClass == 0 || secondClass == 1 {
            // onnxruntime 1.32 takes the logistic of the score first (observed; its
            // ml_common.h of earlier releases did not).
            let p = transform == .logistic ? logistic(s) : s
            row[0] = 1 - p
            row[1] = p
        } else if secondClass == 2 || secondClass == 3 {
            if transform == .logistic {
                row[0] = logistic(-s)
                row[1] = logistic(s)
            } else {
                row[0] = -s
                row[1] = s
            }
        }
    }
}

/// ai.onnx.ml SVMClassifier, as onnxruntime runs it (`svmclassifier.cc`).
///
/// With support vectors (libsvm's SVC, NuSVC): one-vs-one decision values for every pair of
/// classes, the label by majority vote (the first class on ties). With `prob_a`/`prob_b` the
/// scores are class probabilities — Platt-scaled pairwise probabilities, coupled as libsvm
/// does — else the pairwise decision values: C·(C−1)/2 columns, and for two classes two
/// columns [−d, d] (under LOGISTIC [1 − p, p] with p = logistic(d); under SOFTMAX and
/// SOFTMAX_ZERO [1 − d, d], untransformed; under PROBIT [probit(d), 0], where onnxruntime
/// leaves the second column unwritten).
/// Without support vectors (liblinear's form) `coefficients` holds one row per class and
/// the scores are x·w + rho[0], C columns, the label their arg max (for two classes, as
/// onnxruntime: the second label whenever the larger score is positive, or ≥ 0.5 when every
/// coefficient is non-negative).
struct SVMClassifierKernel: Kernel {
    let labels: ClassLabels
    let kernel: SVMKernel
    let transform: PostTransform
    /// nil: the linear form, without support vectors.
    let vectorsPerClass: [Int]?
    let firstVector: [Int]
    let vectorCount: Int
    let supportVectors: [Float]
    let coefficients: [Float]
    let rho: [Float]
    let probA: [Float]
    let probB: [Float]
    let featureCount: Int
    let weightsAllNonNegative: Bool

    var classCount: Int { self.labels.count }
    var pairCount: Int { self.classCount * (self.classCount - 1) / 2 }
    var hasProbabilities: Bool { !self.probA.isEmpty }
    var scoreColumns: Int {
        guard self.vectorsPerClass != nil, !self.hasProbabilities else { return self.classCount }
        return self.classCount > 2 ? self.pairCount : 2
    }

    init(_ c: inout NodeContext) throws {
        try c.require(inputs: 1...1, outputs: 1...2)
        self.labels = try ClassLabels.parse(&c, intsName: "classlabels_ints")
        self.kernel = try SVMKernel(&c)
        self.transform = try PostTransform(&c)
        let perClass = try c.attributes.int64s("vectors_per_class") ?? []
        self.supportVectors = try c.attributes.floats("support_vectors") ?? []
        guard let coefficients = try c.attributes.floats("coefficients"), !coefficients.isEmpty else {
            throw c.error("coefficients are required")
        }
        self.coefficients = coefficients
        self.rho = try c.attributes.floats("rho") ?? []
        self.probA = try c.attributes.floats("prob_a") ?? []
        self.probB = try c.attributes.floats("prob_b") ?? []
        let classes = self.labels.count
        guard classes > 0 else { throw c.error("needs at least one class label") }
        guard self.probA.count == self.probB.count else {
            throw c.error("prob_a has \(self.probA.count) values, prob_b \(self.probB.count)")
        }
        // Every vector holds at least one value: no count beyond the values there are.
        let values = self.supportVectors.count
        guard perClass.allSatisfy({ $0 >= 0 && $0 <= values }) else {
            throw c.error("vectors_per_class has a count below 0 or beyond the support_vectors values")
        }
        let vectors = perClass.reduce(0) { $0 + Int($1) }
        if vectors > 0 {
            guard perClass.count == classes else {
                throw c.error("vectors_per_class has \(perClass.count) counts for \(classes) class labels")
            }
            guard classes >= 2 else { throw c.error("a classifier with support vectors needs two or more classes") }
            guard self.supportVectors.count % vectors == 0, !self.supportVectors.isEmpty else {
                throw c.error("\(self.supportVectors.count) support_vectors values do not fill \(vectors) vectors")
            }
            let pairs = classes * (classes - 1) / 2
            guard coefficients.count == (classes - 1) * vectors else {
                throw c.error(
                    "coefficients has \(coefficients.count) values, \(classes - 1)×\(vectors) expected (classes − 1 × vectors)"
                )
            }
            guard self.rho.count == pairs else {
                throw c.error("rho has \(self.rho.count) values, \(pairs) expected (one per pair of classes)")
            }
            guard self.probA.isEmpty || self.probA.count == pairs else {
                throw c.error("prob_a has \(self.probA.count) values, \(pairs) expected (one per pair of classes)")
            }
            self.vectorsPerClass = perClass.map { Int($0) }
            var start = 0
            var starts: [Int] = []
            for n in perClass {
                starts.append(start)
                start += Int(n)
            }
            self.firstVector = starts
            self.vectorCount = vectors
            self.featureCount = self.supportVectors.count / vectors
        } else {
            guard self.supportVectors.isEmpty else { throw c.error("support_vectors without vectors_per_class") }
            guard coefficients.count % classes == 0 else {
                throw c.error("coefficients (\(coefficients.count)) do not fit \(classes) classes")
            }
            guard !self.rho.isEmpty else { throw c.error("rho is required") }
            self.vectorsPerClass = nil
            self.firstVector = []
            self.vectorCount = 0
            self.featureCount = coefficients.count / classes
        }
        self.weightsAllNonNegative = coefficients.allSatisfy { $0 >= 0 }
    }

    func run(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor] {
        let x = try input(inputs, 0, "SVMClassifier")
        let (values, rows) = try svmRows(
            x, features: self.featureCount, perRow: max(self.vectorCount, self.scoreColumns, self.classCount),
            op: "SVMClassifier")
        let classes = self.classCount
        let columns = self.scoreColumns
        var winners = [Int](repeating: 0, count: rows)
        var scores = [Float](repeating: 0, count: rows * columns)
        var row = [Float](repeating: 0, count: columns)

        guard let perClass = self.vectorsPerClass else {
            // The linear form: the kernel is x·w + rho[0], one row of coefficients per class.
            let raw = SVMKernel(kind: .linear).evaluate(
                values, rows: rows, self.coefficients, count: classes, features: self.featureCount,
                offset: self.rho[0])
            for r in 0..<rows {
                for k in 0..<classes { row[k] = raw[r * classes + k] }
                var best = 0
                for k in 1..<max(classes, 1) where row[k] > row[best] { best = k }
                winners[r] = classes == 2 ? self.binaryWinner(maxWeight: row[best], best: best) : best
                OrtScores.update(&row, count: classes, self.transform, secondClass: -1)
                for k in 0..<columns { scores[r * columns + k] = row[k] }
            }
            return [self.labels.tensor(winners), OnnxTensor(shape: [rows, columns], floats: scores)]
        }

        let kernels = self.kernel.evaluate(
            values, rows: rows, self.supportVectors, count: self.vectorCount, features: self.featureCount)
        let pairs = self.pairCount
        var decisions = [Float](repeating: 0, count: pairs)
        var votes = [Int](repeating: 0, count: classes)
        var pairwise = [Float](repeating: 0, count: classes * classes)
        for r in 0..<rows {
            let k = r * self.vectorCount
            for i in votes.indices { votes[i] = 0 }
            var index = 0
            for i in 0..<(classes - 1) {
                for j in (i + 1)..<classes {
                    // Class i's vectors weighted by their coefficients against j, and j's against i.
                    var sum: Double = 0
                    let rowJ = self.vectorCount * (j - 1)
                    let rowI = self.vectorCount * i
                    for m in self.firstVector[i]..<(self.firstVector[i] + perClass[i]) {
                        sum += Double(self.coefficients[rowJ + m] * kernels[k + m])
                    }
                    for m in self.firstVector[j]..<(self.firstVector[j] + perClass[j]) {
                        sum += Double(self.coefficients[rowI + m] * kernels[k + m])
                    }
                    sum += Double(self.rho[index])
                    decisions[index] = Float(sum)
                    votes[sum > 0 ? i : j] += 1
                    index += 1
                }
            }
            var best = 0
            for i in 1..<classes where votes[i] > votes[best] { best = i }
            winners[r] = best

            let secondClass: Int
            let count: Int
            if self.hasProbabilities {
                index = 0
                for i in 0..<(classes - 1) {
                    for j in (i + 1)..<classes {
                        var p = OrtScores.plattProbability(decisions[index], self.probA[index], self.probB[index])
                        if p < 1.0e-7 { p = 1.0e-7 }
                        if 1 - 1.0e-7 < p { p = 1 - 1.0e-7 }
                        pairwise[i * classes + j] = p
                        pairwise[j * classes + i] = 1 - p
                        index += 1
                    }
                }
                let probabilities = OrtScores.coupled(classes, pairwise)
                for i in 0..<classes { row[i] = probabilities[i] }
                count = classes
                secondClass = -1
            } else {
                for i in 0..<pairs { row[i] = decisions[i] }
                if classes == 2 { row[1] = 0 }
                count = pairs
                secondClass = classes == 2 ? (self.transform == .none ? 2 : 0) : -1
            }
            OrtScores.update(&row, count: count, self.transform, secondClass: secondClass)
            for i in 0..<columns { scores[r * columns + i] = row[i] }
        }
        return [self.labels.tensor(winners), OnnxTensor(shape: [rows, columns], floats: scores)]
    }

    /// onnxruntime's label for two classes (`ChooseClass`) from the larger score and its class.
    private func binaryWinner(maxWeight: Float, best: Int) -> Int {
        if self.hasProbabilities { return best }
        if self.weightsAllNonNegative && maxWeight >= 0.5 { return 1 }
        if maxWeight > 0 && !self.weightsAllNonNegative { return 1 }
        return best
    }
}

/// ai.onnx.ml SVMRegressor, as onnxruntime runs it (`svmregressor.cc`): Σⱼ cⱼ K(x, vⱼ) + rho[0]
/// over `n_supports` support vectors (SVR, NuSVR, OneClassSVM's decision function), or
/// x·coefficients + rho[0] without them; `one_class` turns each value into ±1. Output [N, 1].
struct SVMRegressorKernel: Kernel {
    let kernel: SVMKernel
    let supportVectors: [Float]
    let vectorCount: Int
    let coefficients: [Float]
    let rho: Float
    let oneClass: Bool
    let featureCount: Int

    init(_ c: inout NodeContext) throws {
        try c.require(inputs: 1...1)
        self.kernel = try SVMKernel(&c)
        guard let coefficients = try c.attributes.floats("coefficients"), !coefficients.isEmpty else {
            throw c.error("coefficients are required")
        }
        self.coefficients = coefficients
        self.rho = (try c.attributes.floats("rho"))?.first ?? 0
        self.oneClass = try c.attributes.int("one_class", default: 0) != 0
        self.supportVectors = try c.attributes.floats("support_vectors") ?? []
        let supports = try c.attributes.int("n_supports", default: 0)
        // onnxruntime reads post_transform and never applies it; ONNX's reference implementation
        // refuses anything but NONE. Refused here too, rather than ignored.
        guard try PostTransform(&c) == .none else {
            throw c.error("post_transform other than NONE is not supported for SVMRegressor")
        }
        guard supports >= 0 else { throw c.error("n_supports is negative") }
        if supports > 0 {
            guard self.supportVectors.count % supports == 0, !self.supportVectors.isEmpty else {
                throw c.error(
                    "\(self.supportVectors.count) support_vectors values do not fill \(supports) support vectors")
            }
            guard coefficients.count == supports else {
                throw c.error("coefficients has \(coefficients.count) values for \(supports) support vectors")
            }
            self.vectorCount = supports
            self.featureCount = self.supportVectors.count / supports
        } else {
            guard self.supportVectors.isEmpty else { throw c.error("support_vectors without n_supports") }
            self.vectorCount = 0
            self.featureCount = coefficients.count
        }
    }

    func run(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor] {
        let x = try input(inputs, 0, "SVMRegressor")
        let (values, rows) = try svmRows(
            x, features: self.featureCount, perRow: max(self.vectorCount, 1), op: "SVMRegressor")
        var out: [Float]
        if self.vectorCount > 0 {
            let kernels = self.kernel.evaluate(
                values, rows: rows, self.supportVectors, count: self.vectorCount, features: self.featureCount)
            out = [Float](repeating: self.rho, count: rows)
            if rows > 0 {
                kernels.withUnsafeBufferPointer { pk in
                    self.coefficients.withUnsafeBufferPointer { pc in
                        out.withUnsafeMutableBufferPointer { po in
                            sgemm(
                                pk.baseAddress!, pc.baseAddress!, po.baseAddress!, m: rows, n: 1, k: self.vectorCount,
                                transB: true, beta: 1)
                        }
                    }
                }
            }
        } else {
            out = SVMKernel(kind: .linear).evaluate(
                values, rows: rows, self.coefficients, count: 1, features: self.featureCount, offset: self.rho)
        }
        if self.oneClass { for i in out.indices { out[i] = out[i] > 0 ? 1 : -1 } }
        return [OnnxTensor(shape: [rows, 1], floats: out)]
    }
}

enum SVMOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["SVMClassifier"] = { c in try SVMClassifierKernel(&c) }
        r["SVMRegressor"] = { c in try SVMRegressorKernel(&c) }
    }
}
