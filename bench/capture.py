"""Capture-path benchmark: SDK local mode vs a raw orjson+fsync append, the HTTP server on loopback,
the remote SDK end to end and OTLP ingestion. Prints a table, then one line of JSON with every figure.

    .venv/bin/python bench/capture.py [--quick]

Records are 5-message trajectories (system, user, assistant tool call, tool result, final answer).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.capture import fast_validate as fastschema  # noqa: E402
from pipeline.capture.workspace import Workspace  # noqa: E402
from pipeline.schema import Trajectory  # noqa: E402
from pipeline.server.auth import create_token  # noqa: E402


def record(i: int, run: str = "") -> dict[str, Any]:
    return {
        "trajectory_id": f"{run}t{i}", "agent": {"name": "shopper", "version": "1"}, "model": "tiny-1",
        "task_id": f"task-{i % 50}", "started_at": "2026-11-20T09:00:00Z",
        "messages": [
            {"role": "system", "content": "You are a shopping assistant. Use tools for prices and arithmetic."},
            {"role": "user", "content": f"How much do {i % 9 + 1} apples cost in EUR?"},
            {"role": "assistant", "tool_calls": [{"id": "call_1", "name": "lookup_price",
                                                  "arguments": {"item": "apple"}}],
             "meta": {"input_tokens": 120, "output_tokens": 18, "latency_ms": 210.5}},
            {"role": "tool", "content": '{"price": 1.25, "currency": "USD"}', "tool_call_id": "call_1",
             "name": "lookup_price"},
            {"role": "assistant", "content": f"{i % 9 + 1} apples cost {(i % 9 + 1) * 1.15:.2f} EUR.",
             "meta": {"input_tokens": 160, "output_tokens": 12}},
        ],
    }


def rate(n: int, fn, *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return n / (time.perf_counter() - t0)


def bench_local(n: int, batch: int, rounds: int) -> dict[str, float]:
    """Interleaved rounds (the disk's fsync speed drifts with other load on the host): each round
    times every method once; figures are per-round medians, ratios are medians of per-round ratios."""
    recs = [record(i) for i in range(n)]
    batches = [recs[i:i + batch] for i in range(0, n, batch)]
    models = [[Trajectory.model_validate(r) for r in b] for b in batches]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create("bench", tmp)
        fast = fastschema.LandingWriter(ws.landing)  # the proposed Workspace.writer
        path = ws.root / "baseline.ndjson"
        wid = fast.writer_id

        def baseline() -> None:
            with open(path, "ab", buffering=0) as fh:
                for b in batches:
                    now = time.time_ns()
                    fh.write(b"".join(orjson.dumps({"t": now + i, "w": wid, "r": r}) + b"\n" for i, r in enumerate(b)))
                    os.fsync(fh.fileno())

        methods = {
            "baseline": baseline,
            "local_pydantic": lambda: [ws.write_trajectories(b) for b in batches],
            "local_fast": lambda: [fastschema.write_trajectories(ws, b, fast) for b in batches],
            "local_fast_today_writer": lambda: [fastschema.write_trajectories(ws, b) for b in batches],
            "local_models_dump": lambda: [fastschema.write_trajectories(ws, b, fast) for b in models],
        }
        runs: dict[str, list[float]] = {k: [] for k in methods}
        for _ in range(rounds):
            for name, fn in methods.items():
                runs[name].append(rate(n, fn))
        out = {f"{k}_traj_s": statistics.median(v) for k, v in runs.items()}
        for k in methods:
            if k != "baseline":
                out[f"{k}_ratio"] = statistics.median(a / b for a, b in zip(runs[k], runs["baseline"], strict=True))
                out[f"{k}_msgs_s"] = 5 * out[f"{k}_traj_s"]

        def recorder(m: int) -> None:
            for i in range(m):
                with ws.trajectory("shopper", task_id=f"task-{i % 50}", model="tiny-1") as run:
                    run.system("You are a shopping assistant. Use tools for prices and arithmetic.")
                    run.user("How much do 3 apples cost in EUR?")
                    call = run.tool_call("lookup_price", {"item": "apple"}, meta={"input_tokens": 120})
                    run.tool_result(call, {"price": 1.25, "currency": "USD"})
                    run.assistant("3 apples cost 3.45 EUR.")

        out["recorder_one_fsync_per_traj_s"] = rate(1000, recorder, 1000)
        fast.close()
        ws.close()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: str, port: int) -> subprocess.Popen:
    code = f"from pipeline.server.app import serve; serve(port={port}, home={home!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def bench_server(url: str, token: str, seconds: float, clients: int, batch: int) -> dict[str, float]:
    """Sustained throughput of `clients` concurrent senders posting pre-encoded batches."""
    bodies = [orjson.dumps([record(i, f"b{k}-") for i in range(batch)]) for k in range(50)]
    lat: list[float] = []
    sent = [0]
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(w: int) -> None:
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}",
                                                 "content-type": "application/json"}) as c:
            k = w
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = c.post("/v1/workspaces/bench/trajectories", content=bodies[k % len(bodies)])
                dt = time.perf_counter() - t0
                assert r.status_code == 200 and r.json()["accepted"] == batch, r.text[:300]
                with lock:
                    lat.append(dt)
                    sent[0] += batch
                k += clients

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    lat.sort()
    health = httpx.get(f"{url}/healthz").json()
    return {"server_traj_s": sent[0] / elapsed, "server_msgs_s": 5 * sent[0] / elapsed,
            "server_ack_p50_ms": 1000 * statistics.median(lat), "server_ack_p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
            "server_requests": len(lat), "server_clients": clients,
            "server_records_per_fsync": health["records"] / max(1, health["fsyncs"])}


def bench_remote_sdk(url: str, token: str, n: int) -> dict[str, float]:
    from pipeline.capture.remote_sdk import RemoteWorkspace

    recs = [record(i, "sdk-") for i in range(n)]
    ws = RemoteWorkspace(url, "bench", token, batch_size=100, max_queue=n + 1)
    t0 = time.perf_counter()
    for i in range(0, n, 100):
        ws.write_trajectories(recs[i:i + 100])
    enqueue = time.perf_counter() - t0
    assert ws.flush(60)
    total = time.perf_counter() - t0
    ws.close()
    assert not ws.rejected, ws.rejected[:3]
    return {"remote_sdk_traj_s": n / total, "remote_sdk_enqueue_traj_s": n / enqueue}


def otlp_body(traces: int, spans: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    def kv(k: str, v: str) -> KeyValue:
        return KeyValue(key=k, value=AnyValue(string_value=v))

    out = []
    t = time.time_ns()
    for i in range(traces):
        tid = uuid.uuid4().bytes
        msgs = orjson.dumps([{"role": "user", "parts": [{"type": "text", "content": f"question {i}"}]}]).decode()
        for j in range(spans):
            out.append(Span(trace_id=tid, span_id=os.urandom(8), name=f"chat {j}", kind=3,
                            start_time_unix_nano=t + j * 1000, end_time_unix_nano=t + j * 1000 + 500,
                            attributes=[kv("gen_ai.request.model", "tiny-1"), kv("gen_ai.input.messages", msgs)]))
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": [kv("service.name", "shopper")]}, scope_spans=[ScopeSpans(spans=out)])])
    return req.SerializeToString()


def bench_otlp(url: str, token: str, requests: int) -> dict[str, Any]:
    from pipeline.server.otlp_http import mapper

    body = otlp_body(20, 5)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/x-protobuf"}
    with httpx.Client(base_url=url, headers=headers) as c:
        t0 = time.perf_counter()
        for _ in range(requests):
            r = c.post("/v1/traces", content=body)
            assert r.status_code == 200, r.text[:300]
        dt = time.perf_counter() - t0
    return {"otlp_spans_s": requests * 100 / dt, "otlp_mapper": mapper()[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (CI smoke)")
    ap.add_argument("--seconds", type=float, default=8.0, help="server load duration")
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    n = 5_000 if args.quick else 20_000
    res: dict[str, Any] = {"cores": os.cpu_count(), "local_batch": 1000, "server_batch": 100}
    rounds = 3 if args.quick else 5
    res.update(bench_local(n, 1000, rounds))
    res.update({f"{k}_batch100": v for k, v in bench_local(n // 5, 100, rounds).items()
                if k.startswith(("baseline", "local_fast_", "local_pydantic_"))})
    with tempfile.TemporaryDirectory() as home:
        Workspace.create("bench", home)
        token = create_token(home, "bench", "writer")
        port = free_port()
        proc = start_server(home, port)
        url = f"http://127.0.0.1:{port}"
        try:
            res.update(bench_server(url, token, 2.0 if args.quick else args.seconds, args.clients, 100))
            res.update(bench_remote_sdk(url, token, 5_000 if args.quick else 20_000))
            res.update(bench_otlp(url, token, 20 if args.quick else 100))
        finally:
            proc.terminate()
            proc.wait(10)
    res["target_local_met"] = res["local_fast_ratio"] >= 0.5 and res["local_fast_traj_s"] >= 20_000
    res["target_server_met"] = res["server_traj_s"] >= 10_000
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:,.2f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(orjson.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}).decode())


if __name__ == "__main__":
    main()
