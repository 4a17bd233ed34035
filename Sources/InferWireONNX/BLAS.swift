import Foundation
public import InferWireCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The BLAS library behind GEMM, loaded at run time once its kernel has been chosen.
///
/// OpenBLAS picks its kernels in a load-time constructor from a table of CPU models, and
/// releases that predate a CPU fall back to their slowest kernels on it (Debian 12's 0.3.21
/// runs SSE3 code on AVX-512 Xeons). So the library is not linked: the first use reads the
/// CPU's features, sets `OPENBLAS_CORETYPE` to the best kernel they allow (unless the
/// environment already names one), and only then loads the library with `dlopen`.
public enum BLAS {
    /// What serves GEMM in this process, for logs and `SERVER_METADATA`.
    public struct Report: Sendable, Equatable {
        /// The library file that was loaded, e.g. `libopenblas.so.0`.
        public var library: String
        /// The library's build description (`openblas_get_config`).
        public var configuration: String
        /// The kernel family it runs, e.g. `SkylakeX` (`openblas_get_corename`).
        public var kernel: String
        /// Why that kernel: `cpu features: avx avx2 …`, `OPENBLAS_CORETYPE=… from the
        /// environment`, or `library detection`.
        public var choice: String
        /// The features read from the CPU.
        public var cpuFeatures: CPUFeatures

        /// The facts as key/value pairs (`blas.library`, `blas.kernel`, …).
        public var facts: [String: String] {
            [
                "blas.library": self.library,
                "blas.configuration": self.configuration,
                "blas.kernel": self.kernel,
                "blas.kernel_choice": self.choice,
                "cpu.features": self.cpuFeatures.names.joined(separator: " "),
            ]
        }
    }

    /// The instruction-set extensions that decide which GEMM kernel can run.
    public struct CPUFeatures: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        public static let avx = CPUFeatures(rawValue: 1 << 0)
        public static let avx2 = CPUFeatures(rawValue: 1 << 1)
        public static let fma = CPUFeatures(rawValue: 1 << 2)
        public static let avx512f = CPUFeatures(rawValue: 1 << 3)
        public static let avx512cd = CPUFeatures(rawValue: 1 << 4)
        public static let avx512bw = CPUFeatures(rawValue: 1 << 5)
        public static let avx512dq = CPUFeatures(rawValue: 1 << 6)
        public static let avx512vl = CPUFeatures(rawValue: 1 << 7)

        /// The Skylake-SP set OpenBLAS's `SkylakeX` kernels use.
        public static let avx512Skylake: CPUFeatures = [.avx512f, .avx512cd, .avx512bw, .avx512dq, .avx512vl]

        static let byName: [(String, CPUFeatures)] = [
            ("avx", .avx), ("avx2", .avx2), ("fma", .fma), ("avx512f", .avx512f), ("avx512cd", .avx512cd),
            ("avx512bw", .avx512bw), ("avx512dq", .avx512dq), ("avx512vl", .avx512vl),
        ]

        /// Parses `/proc/cpuinfo`'s `flags` line (the kernel lists only what the OS enabled).
        public init(cpuinfoFlags: String) {
            let flags = Set(cpuinfoFlags.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init))
            self = []
            for (name, feature) in Self.byName where flags.contains(name) { self.insert(feature) }
        }

        /// The features of the CPU this process runs on; empty where they cannot be read.
        public static var current: CPUFeatures {
            guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
                let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
                let colon = line.firstIndex(of: ":")
            else { return [] }
            return CPUFeatures(cpuinfoFlags: String(line[line.index(after: colon)...]))
        }

        /// Feature names, in a fixed order.
        public var names: [String] { Self.byName.filter { self.contains($0.1) }.map(\.0) }
    }

    /// The best OpenBLAS core type the features allow, or nil to leave the choice to the
    /// library (a CPU without AVX, where its own detection is reliable).
    public static func coreType(for features: CPUFeatures) -> String? {
        if features.isSuperset(of: .avx512Skylake) && features.isSuperset(of: [.avx2, .fma]) { return "SkylakeX" }
        if features.isSuperset(of: [.avx, .avx2, .fma]) { return "Haswell" }
        if features.contains(.avx) { return "Sandybridge" }
        return nil
    }

    /// Loads the library on first use. Throws when no BLAS library can be found.
    public static func load() throws(InferWireError) -> Report {
        switch self.loaded {
        case .success(let library): return library.report
        case .failure(let error): throw error
        }
    }

    /// The loaded library's entry points, read once: a GEMM pays a one-time-initialisation
    /// check, not a copy of the report. Only used after a successful ``load()`` (every model
    /// load calls it first), so the unwrap never traps.
    static let functions: Functions = try! BLAS.loaded.get().functions

    struct Functions: Sendable {
        typealias SGEMM =
            @convention(c) (
                Int32, Int32, Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int32,
                UnsafePointer<Float>?, Int32, Float, UnsafeMutablePointer<Float>?, Int32
            ) -> Void
        typealias DGEMM =
            @convention(c) (
                Int32, Int32, Int32, Int32, Int32, Int32, Double, UnsafePointer<Double>?, Int32,
                UnsafePointer<Double>?, Int32, Double, UnsafeMutablePointer<Double>?, Int32
            ) -> Void

        let sgemm: SGEMM
        let dgemm: DGEMM
    }

    private struct Library: Sendable {
        let functions: Functions
        let report: Report
    }

    // CBLAS's enum values (cblas.h).
    static let rowMajor: Int32 = 101
    static let noTrans: Int32 = 111
    static let trans: Int32 = 112

    /// Library names tried in order; Debian's alternatives point these at the installed build.
    static let candidates = ["libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"]

    private static let loaded: Result<Library, InferWireError> = Result { () throws(InferWireError) in
        try BLAS.open()
    }

    private static func open() throws(InferWireError) -> Library {
        let features = CPUFeatures.current
        let choice: String
        if let preset = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"], !preset.isEmpty {
            choice = "OPENBLAS_CORETYPE=\(preset) from the environment"
        } else if let core = self.coreType(for: features) {
            // Read by OpenBLAS's constructor when the library loads, so it must be set first.
            setenv("OPENBLAS_CORETYPE", core, 1)
            choice = "cpu features: \(features.names.joined(separator: " "))"
        } else {
            choice = "library detection"
        }
        var handle: UnsafeMutableRawPointer?
        var library = ""
        for name in self.candidates {
            if let h = dlopen(name, RTLD_NOW | RTLD_LOCAL) {
                handle = h
                library = name
                break
            }
        }
        guard let handle else {
            throw InferWireError(
                code: .failedPrecondition,
                message:
                    "no BLAS library found (tried \(self.candidates.joined(separator: ", "))); install OpenBLAS (Debian: libopenblas0)"
            )
        }
        func symbol<T>(_ name: String, as type: T.Type) throws(InferWireError) -> T {
            guard let pointer = dlsym(handle, name) else {
                throw InferWireError(code: .failedPrecondition, message: "\(library) has no \(name)")
            }
            return unsafeBitCast(pointer, to: type)
        }
        typealias SetThreads = @convention(c) (Int32) -> Void
        typealias Describe = @convention(c) () -> UnsafeMutablePointer<CChar>?
        let sgemm = try symbol("cblas_sgemm", as: Functions.SGEMM.self)
        let dgemm = try symbol("cblas_dgemm", as: Functions.DGEMM.self)
        // Concurrency comes from running many batches at once; each GEMM stays on its thread.
        try symbol("openblas_set_num_threads", as: SetThreads.self)(1)
        let corename = try symbol("openblas_get_corename", as: Describe.self)().map { String(cString: $0) } ?? "unknown"
        let config = try symbol("openblas_get_config", as: Describe.self)().map { String(cString: $0) } ?? "unknown"
        let report = Report(
            library: library, configuration: config, kernel: corename, choice: choice, cpuFeatures: features)
        return Library(functions: Functions(sgemm: sgemm, dgemm: dgemm), report: report)
    }
}
