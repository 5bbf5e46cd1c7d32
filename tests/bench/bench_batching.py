"""Batching benchmark: --enable_batching on vs off, at 1, 8 and 32 concurrent
gRPC clients, on TF Serving's half_plus_two and the ~1M-parameter MLP.

Run with ``make bench``. Writes ``tests/bench/results/batching.json`` and
``batching.md``. Targets (reported, never asserted in ``make test``): with
batching at 32 clients, MLP throughput >= 2x unbatched; p99.9 latency with
batching <= batch_timeout + 10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from tests.bench.bench_predict import RESULTS, SHARED, _request, grpc_concurrent

BATCH_TIMEOUT_MICROS = 2000
MAX_BATCH_SIZE = 32


def run(
    name: str, base: Path, x: np.ndarray, batching: bool, args: argparse.Namespace
) -> list[dict[str, Any]]:
    from functions.serving.process import ServerProcess

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        flags = [f"--model_name={name}", f"--model_base_path={base}"]
        if batching:
            params = Path(tmp) / "batching.config"
            params.write_text(
                f"max_batch_size {{ value: {MAX_BATCH_SIZE} }}\n"
                f"batch_timeout_micros {{ value: {BATCH_TIMEOUT_MICROS} }}\n"
                "num_batch_threads { value: 2 }\n"
            )
            flags += ["--enable_batching", f"--batching_parameters_file={params}"]
        with ServerProcess(flags, Path(tmp) / "server.log") as server:
            server.wait_serving()
            for clients in args.clients:
                print(
                    f"[{name}] batching={'on' if batching else 'off'} clients={clients}", flush=True
                )
                summary = grpc_concurrent(
                    server.address, _request(name, "x", x), clients, args.seconds,
                    threads_per_process=8 if clients >= 8 else 1,
                )  # fmt: skip
                summary.update(model=name, batching=batching)
                rows.append(summary)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from tests.models import export_mlp

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        mlp = Path(tmp) / "mlp"
        export_mlp(mlp, 1)
        features = np.random.default_rng(0).normal(size=(1, 256)).astype(np.float32)
        for name, base, x in (
            (
                "half_plus_two",
                SHARED / "saved_model_half_plus_two_cpu",
                np.array([[1.0]], np.float32),
            ),
            ("mlp_1m", mlp, features),
        ):
            for batching in (False, True):
                rows += run(name, base, x, batching, args)
    lines = [
        "# Batching benchmark", "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · {os.cpu_count()} CPUs · clients and server share "
        f"them · max_batch_size {MAX_BATCH_SIZE}, batch_timeout {BATCH_TIMEOUT_MICROS} us, "
        "2 batch threads.", "",
        "| model | batching | clients | predictions/s | p50 ms | p99 ms | p99.9 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['model']} | {'on' if r['batching'] else 'off'} | {r['clients']} | "
            f"{r['predictions_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['p99_9_ms']:.2f} | {r['errors']} |"
        )
    by = {(r["model"], r["batching"], r["clients"]): r for r in rows}
    checks = {}
    if ("mlp_1m", True, 32) in by:
        on, off = by[("mlp_1m", True, 32)], by[("mlp_1m", False, 32)]
        ratio = on["predictions_per_s"] / off["predictions_per_s"]
        checks["mlp_32_clients_batching_speedup_at_least_2x"] = (ratio >= 2.0, f"{ratio:.2f}x")
    limit = BATCH_TIMEOUT_MICROS / 1000 + 10
    worst = max((r["p99_9_ms"] for r in rows if r["batching"]), default=0.0)
    checks[f"p99_9_with_batching_at_most_{limit:g}ms"] = (worst <= limit, f"{worst:.2f} ms")
    lines += ["", "| check | result | measured |", "|---|---|---|"]
    lines += [f"| {k} | {'PASS' if ok else 'FAIL'} | {v} |" for k, (ok, v) in checks.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batching.json").write_text(json.dumps({"rows": rows, "checks": checks}, indent=2))
    (args.out / "batching.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
