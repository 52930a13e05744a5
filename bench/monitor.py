"""The monitor's speed: how many requests a second it watches, beside what a user would pick instead
(Frouros, BSD-3, and river, BSD-3: a streaming detector per signal), and what it adds to a gateway's requests.

1. **Throughput** on simulated world traffic (``--requests`` requests, ``--keys`` API keys): tether's monitor
   (every signal, all traffic and each key; prompt embeddings hashed, or ``--minilm`` for all-MiniLM-L6-v2)
   against Frouros's ``CUSUM`` and river's ``PageHinkley``, one detector per scalar signal fed request by
   request (they have no embedding signals, no per-key streams and no calibrated thresholds: the work they
   do is a subset of tether's). Requests a second, best of ``--repeats``.
2. **Embedding two-sample test**: tether's ``mmd_test`` against Frouros's ``MMD`` (both Gaussian kernel,
   permutation null) on the same two samples of prompt embeddings: seconds per test and the p-values.
3. **Gateway overhead**: ``tether serve`` in front of a stub upstream, with and without ``--monitor`` (the
   monitor in its own process), open-loop load at ``--rate`` requests a second (below the gateway's
   saturation: at saturation any work at all on a 2-core machine shows in the tail), interleaved rounds;
   overhead at p50/p99 is the latency minus the direct path's in the same round.

    python bench/monitor.py --json docs/results/bench/monitor_cpu.json
    python bench/monitor.py --requests 2000 --seconds 3 --rounds 1     # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import emit
from gateway import STUB_MODEL, _percentile, _port, _wait


def traffic(n: int, keys: int, seed: int = 0) -> list[dict[str, Any]]:
    """World requests as a gateway hands them to its monitor (prompt, reply, lengths, refusal, key)."""
    from tether.world.spec import WorldConfig, build_world
    from tether.world.traffic import traffic_records

    world = build_world(WorldConfig(seed=0))
    rows = []
    for i, r in enumerate(traffic_records(world, n, seed=seed)):
        rows.append({"prompt": r["prompt"], "response": r["response"], "prompt_chars": r["prompt_chars"],
                     "response_chars": r["response_chars"], "refused": r["refused"], "key": f"key{i % keys}",
                     "latency_ms": 20.0 + (i * 7919 % 100) / 10})
    return rows


def _rates(run: Any, requests: int, repeats: int) -> dict[str, Any]:
    """Requests a second of ``run()`` (which handles ``requests`` requests), best of ``repeats``, and each run's."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(requests / (time.perf_counter() - start))
    return {"requests_per_s": round(max(rates), 1), "runs": [round(r, 1) for r in rates]}


def throughput(reference: list[dict[str, Any]], stream: list[dict[str, Any]], embedder: str | None,
               repeats: int) -> dict[str, Any]:
    """Requests a second for tether's monitor and for Frouros / river detectors on the scalar signals."""
    from tether.monitor.signals import scalar_signals
    from tether.monitor.watcher import Monitor, MonitorConfig, observe_all

    def watch(monitor: Monitor) -> Any:
        return lambda: observe_all(Monitor(monitor.config, monitor.signals, monitor.stream.fork("all")), stream)

    def per_request(make: Any) -> Any:
        def run() -> None:
            detectors = {n: make() for n in scalars}
            for record in stream:
                for name, value in scalar_signals(record).items():
                    detectors[name].update(value)
        return run

    out: dict[str, Any] = {}
    monitor = Monitor.calibrate(reference, MonitorConfig(embedder=embedder, window=100, arl_windows=10_000))
    keys = len({r.get("key") for r in stream})
    out["tether"] = {**_rates(watch(monitor), len(stream), repeats), "signals": len(monitor.signal_names()),
                     "streams": 1 + keys, "embedder": embedder}
    # The same work as the others do: the scalar signals of all traffic, one stream, no embedding.
    bare = Monitor.calibrate(reference, MonitorConfig(embedder=None, per_key=False, window=100, arl_windows=10_000))
    out["tether_scalars_only"] = {**_rates(watch(bare), len(stream), repeats), "signals": len(bare.signal_names()),
                                  "streams": 1}
    scalars = sorted({n for r in stream for n in scalar_signals(r)})
    out["scalar_signals"] = scalars
    try:
        from frouros.detectors.concept_drift import CUSUM, CUSUMConfig
    except ImportError:
        out["frouros"] = "not installed (pip install --no-deps frouros==0.9.0)"
    else:
        out["frouros_cusum"] = _rates(per_request(lambda: CUSUM(CUSUMConfig())), len(stream), repeats)
    try:
        from river.drift import PageHinkley
    except ImportError:
        out["river"] = "not installed (pip install --no-deps river==0.23.0)"
    else:
        out["river_page_hinkley"] = _rates(per_request(PageHinkley), len(stream), repeats)
    return out


def mmd(reference: list[dict[str, Any]], stream: list[dict[str, Any]], n: int, permutations: int) -> dict[str, Any]:
    """tether's MMD permutation test against Frouros's on the same prompt embeddings."""
    from tether.monitor.detectors import median_bandwidth, mmd_test
    from tether.monitor.signals import HashEmbedder

    embed = HashEmbedder(256)
    x = embed.embed([r["prompt"] for r in reference[:n]])
    y = embed.embed([r["prompt"] for r in stream[:n]])
    width = median_bandwidth(x, y)
    start = time.perf_counter()
    ours = mmd_test(x, y, permutations=permutations, bandwidth=width)
    out: dict[str, Any] = {"n": n, "dim": x.shape[1], "permutations": permutations,
                           "tether": {"seconds": round(time.perf_counter() - start, 3), "p_value": ours.p_value,
                                      "mmd2": ours.statistic}}
    try:
        from frouros.callbacks.batch import PermutationTestDistanceBased
        from frouros.detectors.data_drift import MMD
        from frouros.utils.kernels import rbf_kernel
    except ImportError:
        out["frouros"] = "not installed"
        return out
    detector = MMD(kernel=functools.partial(rbf_kernel, sigma=width),  # picklable: Frouros permutes in a pool
                   callbacks=[PermutationTestDistanceBased(num_permutations=permutations, random_state=0,
                                                           num_jobs=1, name="permutation_test")])
    start = time.perf_counter()
    detector.fit(X=x)
    result, logs = detector.compare(X=y)
    out["frouros"] = {"seconds": round(time.perf_counter() - start, 3),
                      "p_value": float(logs["permutation_test"]["p_value"]), "mmd2": float(result.distance)}
    out["tether_speedup"] = round(out["frouros"]["seconds"] / max(out["tether"]["seconds"], 1e-9), 2)
    return out


async def _load(url: str, key: str, prompts: list[str], rate: float) -> list[float]:
    """Open-loop load: request i is sent at i / rate seconds whatever the answers before it (as users arrive),
    each on its own connection slot; the latencies of the answered ones."""
    import aiohttp

    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=1000, limit_per_host=1000)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120),
                                     headers={"Authorization": f"Bearer {key}"}) as client:

        async def one(i: int, prompt: str, began: float) -> None:
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            body = {"model": STUB_MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 4}
            start = time.perf_counter()
            async with client.post(f"{url}/chat/completions", json=body) as reply:
                await reply.read()
                if reply.status == 200:
                    latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(one(i, p, began) for i, p in enumerate(prompts)))
    return latencies


def gateway(reference: list[dict[str, Any]], prompts: list[str], rate: float, rounds: int, delay_ms: float
            ) -> dict[str, Any]:
    """tether serve with and without its monitor, in front of one stub; overhead over the direct path."""
    from tether.monitor.watcher import Monitor, MonitorConfig
    from tether.serve.keys import KeyStore, Scopes
    from tether.serve.store import connect

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        monitor_dir = Monitor.calibrate(reference, MonitorConfig()).save(Path(tmp) / "monitor")
        try:
            stub_port = _port()
            procs.append(subprocess.Popen([sys.executable, str(Path(__file__).parent / "gateway.py"), "--stub",
                                           str(stub_port), "--delay-ms", str(delay_ms)], stderr=subprocess.PIPE))
            upstream = f"http://127.0.0.1:{stub_port}/v1"
            _wait(f"http://127.0.0.1:{stub_port}/health", procs[-1])
            systems: dict[str, tuple[str, str]] = {"direct": (upstream, "none")}
            tether = str(Path(sys.executable).parent / "tether")
            for name, extra in (("tether", []), ("tether+monitor", ["--monitor", str(monitor_dir)])):
                db = f"sqlite:///{Path(tmp) / (name + '.db')}"
                _, key = KeyStore(connect(db)).create("bench", Scopes(rpm=10**9, tpm=10**12))
                port = _port()
                procs.append(subprocess.Popen([tether, "serve", "--model", upstream, "--upstream-model", STUB_MODEL,
                                               "--name", STUB_MODEL, "--db", db, "--port", str(port), *extra],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
                _wait(f"http://127.0.0.1:{port}/health", procs[-1])
                systems[name] = (f"http://127.0.0.1:{port}/v1", key)
            for url, key in systems.values():
                asyncio.run(_load(url, key, prompts[:200], rate))  # connections and first paths, off the clock
            runs: dict[str, dict[str, list[float]]] = {n: {"latency": [], "p50": [], "p99": []} for n in systems}
            for _ in range(rounds):
                for name, (url, key) in systems.items():
                    latencies = asyncio.run(_load(url, key, prompts, rate))
                    runs[name]["latency"] += latencies
                    runs[name]["p50"].append(statistics.median(latencies))
                    runs[name]["p99"].append(_percentile(latencies, 0.99))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    out: dict[str, Any] = {"requests_per_round": len(prompts), "rate_rps": rate, "rounds": rounds,
                           "stub_delay_ms": delay_ms, "load": "open loop: request i sent at i / rate s"}
    direct = runs["direct"]
    for name, run in runs.items():
        entry: dict[str, Any] = {"answered": len(run["latency"]),
                                 "p50_ms": round(1000 * statistics.median(run["latency"]), 2),
                                 "p99_ms": round(1000 * _percentile(run["latency"], 0.99), 2)}
        if name != "direct":
            entry["overhead_p50_ms_by_round"] = [round(1000 * (a - b), 2) for a, b in zip(run["p50"], direct["p50"],
                                                                                           strict=True)]
            entry["overhead_p99_ms_by_round"] = [round(1000 * (a - b), 2) for a, b in zip(run["p99"], direct["p99"],
                                                                                           strict=True)]
        out[name] = entry
    added = [round(a - b, 2) for a, b in zip(out["tether+monitor"]["overhead_p99_ms_by_round"],
                                             out["tether"]["overhead_p99_ms_by_round"], strict=True)]
    out["monitor_p99_overhead_added_ms_by_round"] = added
    out["monitor_p99_overhead_added_ms_median"] = round(statistics.median(added), 2)
    # Pooled over every round: the difference of the two p99s (and p50s), with a bootstrap interval.
    on, off = np.array(runs["tether+monitor"]["latency"]), np.array(runs["tether"]["latency"])
    rng = np.random.default_rng(0)
    for q, name in ((0.99, "p99"), (0.5, "p50")):
        draws = [1000 * (np.quantile(rng.choice(on, len(on)), q) - np.quantile(rng.choice(off, len(off)), q))
                 for _ in range(2000)]
        out[f"monitor_{name}_added_ms_pooled"] = round(float(1000 * (np.quantile(on, q) - np.quantile(off, q))), 2)
        out[f"monitor_{name}_added_ms_pooled_95ci"] = [round(float(np.quantile(draws, 0.025)), 2),
                                                      round(float(np.quantile(draws, 0.975)), 2)]
    return out


def main() -> None:
    """Run the three measurements; print (and with --json write) the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000, help="requests watched in the throughput runs")
    parser.add_argument("--reference", type=int, default=20_000, help="reference requests to calibrate on")
    parser.add_argument("--keys", type=int, default=20, help="API keys the traffic comes from")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minilm", action="store_true", help="also measure with all-MiniLM-L6-v2 embeddings")
    parser.add_argument("--mmd-n", type=int, default=500, help="embeddings per sample in the MMD test")
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="requests a second sent to each gateway")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of a round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the stub upstream's answer time")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    reference = traffic(args.reference, args.keys, seed=0)
    stream = traffic(args.requests, args.keys, seed=1)
    result: dict[str, Any] = {"requests": args.requests, "reference": args.reference, "keys": args.keys,
                              "throughput": throughput(reference, stream, "hash", args.repeats)}
    if args.minilm:
        small = stream[:min(len(stream), 2000)]
        result["throughput_minilm"] = throughput(reference[:5000], small, "minilm", 1)
    result["mmd"] = mmd(reference, stream, args.mmd_n, args.permutations)
    count = int(args.rate * args.seconds)
    prompts = [stream[i % len(stream)]["prompt"] for i in range(count)]
    result["gateway"] = gateway(reference, prompts, args.rate, args.rounds, args.delay_ms)
    emit(result, args.json)


if __name__ == "__main__":
    main()
