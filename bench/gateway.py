"""What a gateway adds to each request: tether serve (keys, throttles and the audit trail on) against
LiteLLM's proxy (its master key on), both in front of one stub upstream that answers after a fixed delay.

Every system is driven by the same load, ``--clients`` concurrent clients sending ``--requests`` chat
requests in all, in interleaved rounds (direct to the stub, through tether, through LiteLLM, repeated),
so machine noise falls on each alike. A gateway's overhead at a percentile is its latency there minus
the direct path's at the same percentile; throughput is requests answered per second.

    python bench/gateway.py --litellm /path/to/venv/bin/litellm --json docs/results/bench/gateway_cpu.json
    python bench/gateway.py --requests 40 --clients 8 --rounds 1          # tether only (no LiteLLM given)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import emit

STUB_MODEL = "stub"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stub(port: int, delay_s: float) -> None:
    """The upstream: answers every chat request with one short reply after ``delay_s``."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:  # type: ignore[type-arg]
        await asyncio.sleep(delay_s)
        return {"id": "stub", "object": "chat.completion", "created": 0, "model": STUB_MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}

    @app.get("/health")
    async def health() -> dict:  # type: ignore[type-arg]
        return {"ok": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _wait(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.25)
    raise RuntimeError(f"{url} did not come up")


async def _load(url: str, key: str, requests: int, clients: int) -> tuple[list[float], float, int]:
    """Latencies of the answered requests, the wall time, and how many failed.

    The load comes from aiohttp: httpx's connection pool scans every connection on each request, which at 200
    connections made the load generator, not the systems, the bottleneck (the direct path's p99 was 7 s).
    """
    import aiohttp

    latencies: list[float] = []
    failed = 0
    body = {"model": STUB_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120),
                                     headers={"Authorization": f"Bearer {key}"}) as client:
        share = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]

        async def one_client(n: int) -> None:
            nonlocal failed
            for _ in range(n):
                start = time.perf_counter()
                try:
                    async with client.post(f"{url}/chat/completions", json=body) as reply:
                        await reply.read()
                        ok = reply.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    failed += 1

        start = time.perf_counter()
        await asyncio.gather(*(one_client(n) for n in share))
        return latencies, time.perf_counter() - start, failed


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    """Start the stub and the gateways, drive them in interleaved rounds, report overhead and throughput."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per system per round")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the stub's answer time")
    parser.add_argument("--db", default=None, help="tether's store (default: a SQLite file in a temporary directory)")
    parser.add_argument("--litellm", default=None, help="a litellm executable (pip install 'litellm[proxy]', in "
                        "its own environment); without one only tether is measured")
    parser.add_argument("--json", type=Path, help="also write the results here, with the machine and command")
    parser.add_argument("--stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stub:
        stub(args.stub, args.delay_ms / 1000)
        return

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            stub_port, tether_port = _port(), _port()
            procs.append(subprocess.Popen([sys.executable, __file__, "--stub", str(stub_port), "--delay-ms",
                                           str(args.delay_ms)], stderr=subprocess.PIPE))
            upstream = f"http://127.0.0.1:{stub_port}/v1"
            _wait(f"http://127.0.0.1:{stub_port}/health", procs[-1])

            from tether.serve.keys import KeyStore, Scopes
            from tether.serve.store import connect

            db = args.db or f"sqlite:///{Path(tmp) / 'gateway.db'}"
            _, tether_key = KeyStore(connect(db)).create("bench", Scopes(rpm=10**9, tpm=10**12))
            tether = str(Path(sys.executable).parent / "tether")
            procs.append(subprocess.Popen([tether, "serve", "--model", upstream, "--upstream-model", STUB_MODEL,
                                           "--name", STUB_MODEL, "--db", db, "--port", str(tether_port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            _wait(f"http://127.0.0.1:{tether_port}/health", procs[-1])
            systems = {"direct": (upstream, "none"), "tether": (f"http://127.0.0.1:{tether_port}/v1", tether_key)}
            if args.litellm:
                litellm_port = _port()
                config = Path(tmp) / "litellm.yaml"
                config.write_text(f"model_list:\n  - model_name: {STUB_MODEL}\n    litellm_params:\n"
                                  f"      model: openai/{STUB_MODEL}\n      api_base: {upstream}\n"
                                  f"      api_key: none\ngeneral_settings:\n  master_key: sk-bench\n")
                procs.append(subprocess.Popen([args.litellm, "--config", str(config), "--port", str(litellm_port)],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                              env={**os.environ, "LITELLM_LOG": "ERROR"}))
                _wait(f"http://127.0.0.1:{litellm_port}/health/liveliness", procs[-1])
                systems["litellm"] = (f"http://127.0.0.1:{litellm_port}/v1", "sk-bench")

            warm = max(args.clients, 20)
            for url, key in systems.values():  # connections, imports and first-request paths, off the clock
                asyncio.run(_load(url, key, warm, min(args.clients, warm)))
            runs: dict[str, dict[str, list[float]]] = {name: {"latency": [], "rate": [], "failed": [], "p50": [],
                                                              "p99": []} for name in systems}
            for _ in range(args.rounds):
                for name, (url, key) in systems.items():
                    latencies, wall, failed = asyncio.run(_load(url, key, args.requests, args.clients))
                    runs[name]["latency"] += latencies
                    runs[name]["rate"].append(len(latencies) / wall)
                    runs[name]["failed"].append(failed)
                    runs[name]["p50"].append(statistics.median(latencies))
                    runs[name]["p99"].append(_percentile(latencies, 0.99))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)

    direct = runs["direct"]["latency"]
    result: dict[str, object] = {"requests_per_round": args.requests, "clients": args.clients, "rounds": args.rounds,
                                 "stub_delay_ms": args.delay_ms, "store": "sqlite" if not args.db else args.db,
                                 "method": "overhead at a percentile = the system's latency there minus the direct "
                                 "path's at the same percentile"}
    for name, run in runs.items():
        lat = run["latency"]
        entry = {"answered": len(lat), "failed": int(sum(run["failed"])),
                 "p50_ms": round(1000 * statistics.median(lat), 2), "p99_ms": round(1000 * _percentile(lat, 0.99), 2),
                 "throughput_rps": [round(r, 1) for r in run["rate"]]}
        if name != "direct":
            entry["overhead_p50_ms"] = round(1000 * (statistics.median(lat) - statistics.median(direct)), 2)
            entry["overhead_p99_ms"] = round(1000 * (_percentile(lat, 0.99) - _percentile(direct, 0.99)), 2)
            # Each round against that round's direct path: the spread the pooled figures hide.
            entry["overhead_p50_ms_by_round"] = [round(1000 * (a - b), 2) for a, b in
                                                 zip(run["p50"], runs["direct"]["p50"], strict=True)]
            entry["overhead_p99_ms_by_round"] = [round(1000 * (a - b), 2) for a, b in
                                                 zip(run["p99"], runs["direct"]["p99"], strict=True)]
        result[name] = entry
    if "litellm" in runs:
        tether, litellm = result["tether"], result["litellm"]
        result["tether_p99_overhead_over_litellm"] = round(
            tether["overhead_p99_ms"] / max(litellm["overhead_p99_ms"], 1e-9), 3)  # type: ignore[index]
        result["tether_p99_overhead_over_litellm_by_round"] = [
            round(a / max(b, 1e-9), 3) for a, b in zip(tether["overhead_p99_ms_by_round"],  # type: ignore[index]
                                                        litellm["overhead_p99_ms_by_round"], strict=True)]  # type: ignore[index]
    result["tether_config"] = ("one process (tether serve), SQLite store (WAL, synchronous=FULL), a key with rpm and "
                               "tpm limits, the audit trail on")
    result["litellm_config"] = "one process (litellm --config), its master key; no database"
    emit(result, args.json)


if __name__ == "__main__":
    main()
