"""Loads the same model through InferWire and through a FastAPI + onnxruntime REST service on
this machine, at 1 and 64 requests in flight for the same duration, and prints req/s, p50 and
p99 side by side. REST is loaded with wrk (64 connections: HTTP/1.1 has one request in flight
per connection); InferWire with `inferwire bench` (one connection, requests multiplexed).
Both answer one row per request; InferWire's batcher may merge concurrent rows, which is
the point of the design."""
import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"compare-rest: {what} did not start within {seconds:.0f} s")


def wrk_micros(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def run_wrk(url: str, body: str, connections: int, seconds: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        script.write(f"wrk.body = {json.dumps(body)}\n")
    threads = min(2, connections)
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url]
    subprocess.run(args[:4] + ["-d2s", "-s", script.name, url], check=True, capture_output=True)  # warm-up
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    os.unlink(script.name)
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit("compare-rest: the REST service answered errors:\n" + out)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = wrk_micros(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = wrk_micros(re.search(r"\s99%\s+(\S+)", out).group(1))
    return {"rps": rate, "p50": p50, "p99": p99}


def run_bench(inferwire: str, port: int, input_name: str, row: list, concurrency: int, seconds: int) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as out:
        path = out.name
    subprocess.run([
        inferwire, "bench", "--server", f"127.0.0.1:{port}", "--model", "mlp", "--concurrency", str(concurrency),
        "--input", f"{input_name}={json.dumps([row])}", "--warmup", "2", "--window", str(seconds), "--max-windows", "1",
        "--quiet", "--json", path], check=True, capture_output=True)
    with open(path) as f:
        level = json.load(f)["levels"][0]
    os.unlink(path)
    if level["errors"]:
        sys.exit(f"compare-rest: InferWire answered errors: {level['errors']}")
    return {"rps": level["throughput"], "p50": level["latency"]["p50"], "p99": level["latency"]["p99"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inferwire", required=True)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=os.path.join(ROOT, "Benchmarks", "results", "compare-rest.json"))
    args = parser.parse_args()

    import onnxruntime as ort
    model = os.path.join(ROOT, "examples", "models", "mlp", "1", "model.onnx")
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    width = session.get_inputs()[0].shape[1]
    random.seed(7)
    row = [round(random.uniform(-1, 1), 4) for _ in range(width)]

    rest_port, iw_port = free_port(), free_port()
    env = dict(os.environ, MODEL_PATH=model)
    rest = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "rest_service:app", "--host", "127.0.0.1", "--port", str(rest_port),
         "--workers", "1", "--log-level", "warning", "--no-access-log"],
        cwd=os.path.dirname(os.path.abspath(__file__)), env=env)
    server = subprocess.Popen(
        [args.inferwire, "serve", "--repository", os.path.join(ROOT, "examples", "models"), "--port", str(iw_port),
         "--http-port", "0", "--log-level", "warning"], stdout=subprocess.DEVNULL)
    try:
        body = json.dumps({"inputs": [row]})
        url = f"http://127.0.0.1:{rest_port}/predict"

        def rest_ready() -> bool:
            request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
            return urllib.request.urlopen(request, timeout=1).status == 200

        wait_until(rest_ready, "the REST service")
        wait_until(lambda: socket.create_connection(("127.0.0.1", iw_port), timeout=1).close() is None, "InferWire")

        # Rounds interleave the two sides (and alternate which goes first), so the machine's
        # drift between fast and slow periods hits both alike; medians are reported.
        rounds = {key: [] for key in (("rest", 1), ("inferwire", 1), ("rest", 64), ("inferwire", 64))}
        for r in range(args.rounds):
            for concurrency in (1, 64):
                sides = ["rest", "inferwire"] if (r + concurrency) % 2 else ["inferwire", "rest"]
                for side in sides:
                    if side == "rest":
                        rounds[(side, concurrency)].append(run_wrk(url, body, concurrency, args.seconds))
                    else:
                        rounds[(side, concurrency)].append(
                            run_bench(args.inferwire, iw_port, input_name, row, concurrency, args.seconds))
    finally:
        rest.terminate()
        server.terminate()
        rest.wait()
        server.wait()

    def median(values):
        values = sorted(values)
        n = len(values)
        return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2

    results = {key: {m: median([r[m] for r in runs]) for m in ("rps", "p50", "p99")} for key, runs in rounds.items()}
    ratios = {
        (c, m): median([iw[m] / rest[m] for iw, rest in zip(rounds[("inferwire", c)], rounds[("rest", c)])])
        for c in (1, 64) for m in ("rps", "p50", "p99")
    }
    print(f"mlp (32→256→256→2), one row per request; {args.rounds} interleaved rounds of {args.seconds} s per side "
          "after a 2 s warm-up; medians")
    print(f"{'in flight':>9}  {'':<26}{'req/s':>10}{'p50 µs':>10}{'p99 µs':>10}")
    for c in (1, 64):
        rest_r, iw_r = results[("rest", c)], results[("inferwire", c)]
        print(f"{c:>9}  {'FastAPI+onnxruntime (wrk)':<26}{rest_r['rps']:>10.0f}{rest_r['p50']:>10.1f}{rest_r['p99']:>10.1f}")
        print(f"{'':>9}  {'InferWire (inferwire bench)':<26}{iw_r['rps']:>10.0f}{iw_r['p50']:>10.1f}{iw_r['p99']:>10.1f}")
        print(f"{'':>9}  {'InferWire / REST':<26}{ratios[(c, 'rps')]:>9.1f}×{ratios[(c, 'p50')]:>9.3f}×{ratios[(c, 'p99')]:>9.3f}×")
    print(f"\nreq/s at 64 in flight: {ratios[(64, 'rps')]:.1f}× REST (target ≥ 10×); "
          f"p50 at 1 in flight: {ratios[(1, 'p50')]:.3f}× REST (target ≤ 0.2×); medians of per-round ratios")
    print("per-round p50 ratios at 1 in flight: " + " ".join(
        f"{iw['p50'] / rest['p50']:.3f}" for iw, rest in zip(rounds[("inferwire", 1)], rounds[("rest", 1)])))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({f"{side}@{c}": runs for (side, c), runs in rounds.items()}, f, indent=2)


if __name__ == "__main__":
    main()
