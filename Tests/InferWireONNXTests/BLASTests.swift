import Foundation
import Testing

@testable import InferWireONNX

@Suite("Choosing the BLAS kernel")
struct BLASTests {
    typealias Features = BLAS.CPUFeatures

    /// Every combination of the features the choice looks at.
    static let allCombinations: [Features] = (0..<(1 << 8)).map { Features(rawValue: UInt32($0)) }

    @Test("a CPU with AVX2 and FMA, or with AVX-512, never gets the generic SSE kernels")
    func neverGeneric() {
        for features in Self.allCombinations {
            let core = BLAS.coreType(for: features)
            if features.isSuperset(of: [.avx, .avx2, .fma]) {
                #expect(
                    core == "Haswell" || core == "SkylakeX", "features \(features.names) chose \(core ?? "detection")")
            }
            if features.isSuperset(of: Features.avx512Skylake.union([.avx, .avx2, .fma])) {
                #expect(core == "SkylakeX", "features \(features.names) chose \(core ?? "detection")")
            }
        }
    }

    @Test("a kernel is chosen only if the CPU has every feature it uses")
    func neverBeyondTheCPU() {
        for features in Self.allCombinations {
            switch BLAS.coreType(for: features) {
            case "SkylakeX": #expect(features.isSuperset(of: Features.avx512Skylake.union([.avx2, .fma])))
            case "Haswell": #expect(features.isSuperset(of: [.avx, .avx2, .fma]))
            case "Sandybridge": #expect(features.contains(.avx))
            case nil: #expect(!features.contains(.avx))
            case let other: Issue.record("unexpected core type \(other ?? "")")
            }
        }
    }

    @Test("cpuinfo flags parse into features, ignoring the ones the choice does not use")
    func parsesFlags() {
        let skylake = Features(
            cpuinfoFlags: " fpu vme sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni")
        #expect(skylake == Features.avx512Skylake.union([.avx, .avx2, .fma]))
        #expect(BLAS.coreType(for: skylake) == "SkylakeX")
        let haswell = Features(cpuinfoFlags: "fpu sse4_2 avx avx2 fma bmi2")
        #expect(BLAS.coreType(for: haswell) == "Haswell")
        // avx512f alone (Knights Landing-like) is not enough for SkylakeX's kernels.
        let partial = Features(cpuinfoFlags: "avx avx2 fma avx512f")
        #expect(BLAS.coreType(for: partial) == "Haswell")
        #expect(Features(cpuinfoFlags: "sse sse2 ssse3") == [])
        #expect(BLAS.coreType(for: []) == nil)
    }

    @Test("the library loaded in this process runs the kernel chosen for this CPU")
    func loadedKernelMatchesTheCPU() throws {
        let report = try BLAS.load()
        let features = Features.current
        #expect(report.cpuFeatures == features)
        if report.choice.contains("environment") {
            // Whoever set the environment before the library loaded decides.
            #expect(report.choice.contains(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "?"))
        } else if let chosen = BLAS.coreType(for: features) {
            #expect(report.choice.hasPrefix("cpu features"))
            #expect(report.kernel.lowercased() == chosen.lowercased())
        }
        if features.isSuperset(of: [.avx, .avx2, .fma]) {
            let generic = [
                "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine", "northwood",
            ]
            #expect(!generic.contains(report.kernel.lowercased()), "AVX2 CPU runs \(report.kernel)")
        }
        #expect(report.facts["blas.kernel"] == report.kernel)
    }

    @Test("GEMM through the loaded library computes a known product")
    func gemmComputes() throws {
        _ = try BLAS.load()
        // [2×3] · [3×2]
        let a: [Float] = [1, 2, 3, 4, 5, 6]
        let b: [Float] = [7, 8, 9, 10, 11, 12]
        var c = [Float](repeating: -1, count: 4)
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    sgemm(a.baseAddress!, b.baseAddress!, c.baseAddress!, m: 2, n: 2, k: 3)
                }
            }
        }
        #expect(c == [58, 64, 139, 154])
        let ad: [Double] = [1, 2, 3, 4, 5, 6]
        var cd = [Double](repeating: -1, count: 4)
        ad.withUnsafeBufferPointer { a in
            ad.withUnsafeBufferPointer { b in
                cd.withUnsafeMutableBufferPointer { c in
                    // Aᵀ·A: [3×2]·[2×3]
                    dgemm(a.baseAddress!, b.baseAddress!, c.baseAddress!, m: 2, n: 2, k: 3, transB: true)
                }
            }
        }
        #expect(cd == [14, 32, 32, 77])
    }
}
