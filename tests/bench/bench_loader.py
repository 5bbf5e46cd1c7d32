"""Loader benchmark: from a publish event to an assignment, against a raw boto3 copy.

One ``rollway loader`` subprocess (8 workers) on a real SeaweedFS (S3) and a real
tansu broker, both on loopback:

- latency: TF Serving's half_plus_two published as ``--latency-versions``
  versions of one model, one at a time with the loader idle: from the producer's
  acknowledgement of the ModelPublished to this process consuming the
  AssignmentChanged it caused; p50, p95 and max;
- throughput: ``--throughput-versions`` versions of about ``--mib`` MiB each
  (half_plus_two plus one random file) over ``--models`` models, all uploaded
  first, then announced at once: versions a minute, from the first
  acknowledgement to the last AssignmentChanged;
- baseline, in the same run and for the same objects: a boto3 copy of each
  version, through this process (``get_object`` then ``put_object``, as the
  loader's copy streams) and server-side (``copy_object``), one version at a
  time;
- where the loader's time goes: the verify, stage and assign seconds it logs
  per version (``--log-format json``).

Uploads are not timed. Results: tests/bench/results/loader.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.bench.bench_predict import RESULTS, SHARED, percentile

if TYPE_CHECKING:
    from loader.storage import Storage

MIB = 2**20
BUCKET = "bench"
SOURCE = "//rollway/bench"


def build_source(root: Path, name: str, blob_mib: int) -> Path:
    """half_plus_two, plus ``blob_mib`` MiB of random bytes in ``assets/blob.bin``."""
    path = root / name
    shutil.copytree(SHARED / "saved_model_half_plus_two_cpu" / "00000123", path)
    if blob_mib:
        with (path / "assets" / "blob.bin").open("wb") as out:
            for _ in range(blob_mib):
                out.write(os.urandom(MIB))
    return path


class Bench:
    """The running parts: SeaweedFS, tansu, one loader, a producer and a consumer."""

    def __init__(self, root: Path) -> None:
        self._stops: list[Callable[[], Any]] = []
        try:
            self._start(root)
        except BaseException:
            self.close()
            raise

    def _start(self, root: Path) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        from functions.devstack.seaweedfs import SeaweedFS
        from tests.kafka_broker import TansuBroker
        from tests.loader.harness import Stack, Topics, subprocess_env

        self.weed = SeaweedFS(root / "weed")
        self._stops.append(self.weed.stop)
        self.weed.start()
        self.weed.create_bucket(BUCKET)
        os.environ.update(self.weed.env())
        self.broker = TansuBroker(root / "tansu.log")
        self._stops.append(self.broker.stop)
        self.stack = Stack(
            root=f"s3://{BUCKET}/loader-{uuid.uuid4().hex[:8]}",
            kafka=self.broker,
            topics=Topics.fresh(self.broker),
            env=subprocess_env(self.weed.env()),
            workdir=root,
        )
        self.landings: dict[str, Storage] = {}
        self.client = self.weed.client()
        self._stops.append(self.client.close)
        self.producer = KafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all")
        self._stops.append(lambda: self.producer.close(10))
        self.consumer = KafkaConsumer(
            self.stack.topics.assignments, bootstrap_servers=self.broker.bootstrap,
            auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=10,
        )  # fmt: skip
        self._stops.append(self.consumer.close)
        self._stops.append(self.stack.stop_loaders)
        self.loader = self.stack.start_loader()
        self._wait_consuming()

    def _wait_consuming(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(r"Updated partition assignment: \[\w", self.stack.loader_log()):
            if self.loader.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the loader did not start:\n{self.stack.loader_log()[-3000:]}")
            time.sleep(0.05)

    def publish(self, source: Path, model: str, version: int) -> Any:
        """Uploads a version (files, then its manifest), untimed; returns the result."""
        from loader.publish import publish_version
        from loader.storage import open_storage

        if model not in self.landings:  # each opens an S3 client: about 0.2 s of CPU
            self.landings[model] = open_storage(f"{self.stack.landing}/{model}")
        return publish_version(source, self.landings[model], model, version, workers=8)

    def announce(self, result: Any) -> Any:
        from functions.publish_cmd import published_event
        from loader.events import encode_model_published

        record = encode_model_published(published_event(result), SOURCE)
        return self.producer.send(
            self.stack.topics.publish, key=record.key, value=record.value, headers=record.headers
        )

    def wait_assigned(self, wanted: Callable[[Any], bool], timeout: float = 120.0) -> float:
        """Consumes AssignmentChanged until ``wanted`` is true of one; returns when it came."""
        from loader.events import decode_data
        from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=50).values():
                for record in records:
                    if wanted(decode_data(record.value, AssignmentChanged())):
                        return time.perf_counter()
            if self.loader.poll() is not None:
                break
        raise RuntimeError(f"no such assignment came:\n{self.stack.loader_log()[-3000:]}")

    def copy_through(self, version_uri: str, target: str) -> None:
        """The baseline: each object of a version through this process (get, then put)."""
        bucket, prefix = self._split(version_uri)
        for key in self._keys(bucket, prefix):
            data = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
            self.client.put_object(Bucket=bucket, Key=target + key[len(prefix) :], Body=data)

    def copy_server_side(self, version_uri: str, target: str) -> None:
        bucket, prefix = self._split(version_uri)
        for key in self._keys(bucket, prefix):
            source = {"Bucket": bucket, "Key": key}
            self.client.copy_object(
                Bucket=bucket, Key=target + key[len(prefix) :], CopySource=source
            )

    def _split(self, uri: str) -> tuple[str, str]:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return bucket, prefix.rstrip("/") + "/"

    def _keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def timings(self, models: set[str]) -> list[dict[str, Any]]:
        """The loader's logged outcome of each version of ``models``."""
        found = []
        for line in self.stack.loader_log().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("outcome") and entry.get("model") in models:
                found.append(entry)
        return found

    def close(self) -> None:
        """Stops what was started, the loader first, by PID."""
        while self._stops:
            self._stops.pop()()


def time_baselines(bench: Bench, results: list[Any]) -> dict[str, list[float]]:
    """Seconds per version for each baseline copy of ``results``' versions."""
    out: dict[str, list[float]] = {"get_put": [], "copy_object": []}
    base = bench.stack.root.removeprefix(f"s3://{BUCKET}/")
    for result in results:
        for name, copy in (
            ("get_put", bench.copy_through),
            ("copy_object", bench.copy_server_side),
        ):
            target = f"{base}/raw-{name}/{uuid.uuid4().hex[:8]}/"
            started = time.perf_counter()
            copy(result.version_uri, target)
            out[name].append(time.perf_counter() - started)
    return out


def measure_latency(bench: Bench, source: Path, count: int) -> dict[str, Any]:
    warm = bench.publish(source, "warm", 1)  # the loader's first event pays for imports
    bench.announce(warm).get(30)
    bench.wait_assigned(lambda a: a.model == "warm")
    seconds, results = [], []
    for version in range(1, count + 1):
        result = bench.publish(source, "latency", version)
        results.append(result)
        bench.announce(result).get(30)
        acked = time.perf_counter()

        def caused(change: Any, version: int = version) -> bool:
            return bool(change.model == "latency" and change.generation == version)

        assigned = bench.wait_assigned(caused)
        seconds.append(assigned - acked)
    baseline = time_baselines(bench, results)
    return {
        "versions": count,
        "bytes_per_version": results[0].total_bytes,
        "files_per_version": len(results[0].manifest.files),
        "seconds": [round(s, 4) for s in seconds],
        "p50_s": percentile(seconds, 50),
        "p95_s": percentile(seconds, 95),
        "max_s": max(seconds),
        "mean_s": statistics.fmean(seconds),
        "loader": breakdown(bench.timings({"latency"})),
        "get_put_p50_s": percentile(baseline["get_put"], 50),
        "copy_object_p50_s": percentile(baseline["copy_object"], 50),
    }


def measure_throughput(bench: Bench, source: Path, count: int, models: int) -> dict[str, Any]:
    names = [f"tput{i}" for i in range(models)]
    plan = [(names[i % models], i // models + 1) for i in range(count)]
    results = [bench.publish(source, model, version) for model, version in plan]
    last = {model: version for model, version in plan}
    pending = set(names)

    def finished(change: Any) -> bool:
        if change.model in pending and change.generation == last[change.model]:
            pending.discard(change.model)
        return not pending

    futures = [bench.announce(result) for result in results]
    futures[0].get(30)
    started = time.perf_counter()
    for future in futures[1:]:
        future.get(30)
    ended = bench.wait_assigned(finished, timeout=600)
    elapsed = ended - started
    baseline = time_baselines(bench, results)
    get_put, server = sum(baseline["get_put"]), sum(baseline["copy_object"])
    return {
        "versions": count,
        "models": models,
        "bytes_per_version": results[0].total_bytes,
        "seconds": round(elapsed, 3),
        "versions_per_min": count / elapsed * 60,
        "seconds_per_version": elapsed / count,
        "loader": breakdown(bench.timings(set(names))),
        "get_put_seconds_per_version": get_put / count,
        "get_put_versions_per_min": count / get_put * 60,
        "copy_object_seconds_per_version": server / count,
        "copy_object_versions_per_min": count / server * 60,
    }


def breakdown(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    staged = [o for o in outcomes if o["outcome"] == "staged"]
    means = {
        f"{step}_mean_s": statistics.fmean(o.get(step, 0.0) for o in staged) if staged else 0.0
        for step in ("verify_s", "stage_s", "assign_s")
    }
    return {"staged": len(staged), "outcomes": len(outcomes), **means}


def write_report(latency: dict[str, Any], throughput: dict[str, Any], out: Path) -> None:
    lat, tput = latency, throughput
    ll, tl = lat["loader"], tput["loader"]
    mib = tput["bytes_per_version"] / MIB
    lines = [
        "# Loader benchmark", "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · {os.cpu_count()} CPUs · one `rollway loader` "
        "(8 workers) · S3 = SeaweedFS and Kafka = tansu (memory), both on loopback · "
        "baselines copy the same objects with boto3, one version at a time, in this process.",
        "",
        "| measurement | loader | boto3 get+put | boto3 copy_object | get+put / loader |",
        "|---|---:|---:|---:|---:|",
        f"| latency, half_plus_two ({lat['bytes_per_version'] / 1024:.0f} KiB, "
        f"{lat['files_per_version']} files): p50 | {lat['p50_s'] * 1000:.0f} ms | "
        f"{lat['get_put_p50_s'] * 1000:.0f} ms | {lat['copy_object_p50_s'] * 1000:.0f} ms | "
        f"{lat['get_put_p50_s'] / lat['p50_s']:.0%} |",
        f"| latency, half_plus_two: p95 (max) over {lat['versions']} | "
        f"{lat['p95_s'] * 1000:.0f} ms ({lat['max_s'] * 1000:.0f} ms) | | | |",
        f"| throughput, {tput['versions']} versions of {mib:.1f} MiB over {tput['models']} "
        f"models | {tput['versions_per_min']:.0f} versions/min | "
        f"{tput['get_put_versions_per_min']:.0f} versions/min | "
        f"{tput['copy_object_versions_per_min']:.0f} versions/min | "
        f"{tput['get_put_seconds_per_version'] / tput['seconds_per_version']:.0%} |",
        f"| throughput: seconds per version | {tput['seconds_per_version']:.2f} s | "
        f"{tput['get_put_seconds_per_version']:.2f} s | "
        f"{tput['copy_object_seconds_per_version']:.2f} s | |",
        "",
        "Where the loader's time goes: means per version of the steps it logs, and the rest"
        " of the mean latency (or of the time per version): waiting for the fetch to return,"
        " decoding, sending AssignmentChanged, committing the offset.",
        "",
        "| scenario | verify | stage (copy) | assign | rest |",
        "|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for name, steps, total in (
        ("latency, half_plus_two", ll, lat["mean_s"]),
        (f"throughput, {mib:.1f} MiB", tl, tput["seconds_per_version"]),
    ):
        busy = steps["verify_s_mean_s"] + steps["stage_s_mean_s"] + steps["assign_s_mean_s"]
        lines.append(
            f"| {name} | {steps['verify_s_mean_s'] * 1000:.0f} ms | "
            f"{steps['stage_s_mean_s'] * 1000:.0f} ms | {steps['assign_s_mean_s'] * 1000:.0f} ms | "
            f"{max(0.0, total - busy) * 1000:.0f} ms |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "loader.json").write_text(
        json.dumps({"latency": latency, "throughput": throughput}, indent=2)
    )
    (out / "loader.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--latency-versions", type=int, default=20)
    parser.add_argument("--throughput-versions", type=int, default=20)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--mib", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollway-bench-loader-") as tmp:
        root = Path(tmp)
        small = build_source(root / "src", "small", 0)
        large = build_source(root / "src", "large", args.mib)
        bench = Bench(root)
        try:
            latency = measure_latency(bench, small, args.latency_versions)
            throughput = measure_throughput(bench, large, args.throughput_versions, args.models)
        finally:
            bench.close()
    write_report(latency, throughput, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
