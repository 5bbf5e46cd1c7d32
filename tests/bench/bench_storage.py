"""Storage benchmark: `rollway verify` and `rollway publish` against raw baselines.

One version of about 500 MiB (four 100 MiB files, 400 files of 256 KiB and
TF Serving's half_plus_two SavedModel) is published and verified:

- local verify vs raw ``hashlib.sha256`` over the same files (one thread);
- S3 verify vs a plain boto3 ``get_object`` of each object plus hashlib;
- S3 publish vs boto3 ``upload_file`` of the same files (default TransferConfig);
- hdfs:// publish vs ``pyarrow.fs.copy_files`` into ``HadoopFileSystem`` (pyarrow's
  own threaded copy, its I/O pool at ``--workers`` threads), and hdfs:// verify vs
  ``HadoopFileSystem.open_input_stream`` of each file plus hashlib;
- webhdfs:// publish vs plain WebHDFS with ``requests`` (CREATE, then a PUT of the
  file to the DataNode it redirects to), and webhdfs:// verify vs a plain OPEN
  (GET, redirected) streamed into hashlib.

The HDFS baselines run on ``--workers`` threads, as ours do: HDFS 2.7 holds each
file's close for up to 400 ms, so a one-file-at-a-time baseline would measure
that wait, not the bytes. Their ratios compare like with like.

S3 is a real SeaweedFS on loopback, HDFS a real NameNode and DataNode (Hadoop
2.7.3, functions/devstack/hdfs.py; ``--no-hdfs`` leaves those rows out, and a
machine that cannot run it says why in place of them). Every measurement runs
``--repeat`` times, alternating ours and the baseline; the best of each is
compared. Results: tests/bench/results/storage.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.bench.bench_predict import RESULTS, SHARED

MIB = 2**20


def build_version(root: Path, large: int, large_mib: int, small: int, small_kib: int) -> Path:
    version = root / "src" / "1"
    shutil.copytree(SHARED / "saved_model_half_plus_two_cpu" / "00000123", version)
    blobs = version / "assets" / "blobs"
    blobs.mkdir(parents=True)
    chunk = os.urandom(MIB)
    for i in range(large):
        with (blobs / f"large-{i}.bin").open("wb") as out:
            for j in range(large_mib):
                out.write(chunk[j % 7 :] + chunk[: j % 7])  # distinct MiBs, cheaply
    for i in range(small):
        (blobs / f"small-{i:04d}.bin").write_bytes(os.urandom(small_kib * 1024))
    return version


def files_of(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssPeak:
    """Samples this process's resident memory every 10 ms while running ``fn``:
    the growth over the starting RSS is what the operation itself holds."""

    def __init__(self) -> None:
        self.growth_mib = 0.0

    def run(self, fn: Callable[[], Any]) -> None:
        start, peak, done = rss_mib(), [0.0], threading.Event()

        def sample() -> None:
            while not done.wait(0.01):
                peak[0] = max(peak[0], rss_mib())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            fn()
        finally:
            done.set()
            sampler.join()
        self.growth_mib = max(self.growth_mib, peak[0] - start)


def best(
    repeat: int,
    ours: Callable[[], Any],
    baseline: Callable[[], Any],
    cleanup: Callable[[], Any] | None = None,
) -> tuple[float, float, float]:
    """Best times of ours and of the baseline, and ours' RSS growth (MiB).
    ``cleanup``, if given, runs after each of them, untimed."""
    times_ours: list[float] = []
    times_base: list[float] = []
    memory = RssPeak()
    for _ in range(repeat):
        started = time.perf_counter()
        baseline()
        times_base.append(time.perf_counter() - started)
        if cleanup is not None:
            cleanup()
        started = time.perf_counter()
        memory.run(ours)
        times_ours.append(time.perf_counter() - started)
        if cleanup is not None:
            cleanup()
    return min(times_ours), min(times_base), memory.growth_mib


def raw_hash(paths: list[Path]) -> None:
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as reader:
            while chunk := reader.read(8 * MIB):
                digest.update(chunk)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=100)
    parser.add_argument("--small", type=int, default=400)
    parser.add_argument("--small-kib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-hdfs", action="store_true", help="leave out the HDFS rows")
    args = parser.parse_args()

    from loader.publish import publish_version
    from loader.storage import open_storage
    from loader.verify import Verdict, verify_version

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rollway-bench-") as tmp:
        root = Path(tmp)
        source = build_version(root, args.large, args.large_mib, args.small, args.small_kib)
        paths = files_of(source)
        total = sum(p.stat().st_size for p in paths)

        def row(
            name: str, ours: float, base: float, baseline: str, target: float, mib: float
        ) -> None:
            ratio = base / ours  # throughput ratio: ours / baseline
            rows.append({
                "operation": name, "baseline": baseline, "bytes": total, "files": len(paths),
                "ours_s": round(ours, 3), "baseline_s": round(base, 3),
                "ours_mib_s": round(total / MIB / ours, 1),
                "baseline_mib_s": round(total / MIB / base, 1),
                "ratio": round(ratio, 3), "target": target, "pass": ratio >= target,
                "rss_growth_mib": round(mib),
            })  # fmt: skip

        # Local: publish into a local store once, then verify it.
        local = open_storage(str(root / "local" / "m"))
        publish_version(source, local, "m", 1, workers=args.workers)
        stored = files_of(root / "local" / "m" / "1")

        def local_verify() -> None:
            report = verify_version(local, "1", workers=args.workers)
            assert report.verdict is Verdict.COMPLETE, report.problems

        ours, base, mib = best(args.repeat, local_verify, lambda: raw_hash(stored))
        row("verify (local disk)", ours, base, "hashlib.sha256, one pass", 0.8, mib)

        measure_s3(root, source, paths, args, row)
        if not args.no_hdfs:
            from functions.devstack.hdfs_dist import MissingPrerequisite

            try:
                measure_hdfs(root, source, paths, args, row)
            except MissingPrerequisite as err:
                notes.append(f"HDFS rows left out: {err}")
                print(notes[-1])

    write_report(rows, args, total, len(paths), notes)
    return 0


Row = Callable[[str, float, float, str, float, float], None]


def measure_s3(
    root: Path, source: Path, paths: list[Path], args: argparse.Namespace, row: Row
) -> None:
    from functions.devstack.seaweedfs import SeaweedFS
    from loader.publish import publish_version
    from loader.storage import open_storage
    from loader.verify import Verdict, verify_version

    with SeaweedFS(root / "weed") as weed:
        bucket = weed.create_bucket("bench")
        os.environ.update(weed.env())
        client = weed.client()
        keys = [p.relative_to(source).as_posix() for p in paths]

        def our_publish() -> None:
            prefix = f"s3://{bucket}/ours-{uuid.uuid4().hex[:8]}/m"
            publish_version(source, open_storage(prefix), "m", 1, workers=args.workers)

        def boto3_upload() -> None:
            prefix = f"raw-{uuid.uuid4().hex[:8]}/m/1"
            for path, key in zip(paths, keys, strict=True):
                client.upload_file(str(path), bucket, f"{prefix}/{key}")

        ours, base, mib = best(args.repeat, our_publish, boto3_upload)
        row("publish (S3)", ours, base, "boto3 upload_file per file", 0.9, mib)

        s3 = open_storage(f"s3://{bucket}/verify/m")
        publish_version(source, s3, "m", 1, workers=args.workers)

        def s3_verify() -> None:
            report = verify_version(s3, "1", workers=args.workers)
            assert report.verdict is Verdict.COMPLETE, report.problems

        def boto3_download() -> None:
            for key in keys:
                body = client.get_object(Bucket=bucket, Key=f"verify/m/1/{key}")["Body"]
                digest = hashlib.sha256()
                while chunk := body.read(8 * MIB):
                    digest.update(chunk)

        ours, base, mib = best(args.repeat, s3_verify, boto3_download)
        row("verify (S3)", ours, base, "boto3 get_object + hashlib", 0.8, mib)
        client.close()


def measure_hdfs(
    root: Path, source: Path, paths: list[Path], args: argparse.Namespace, row: Row
) -> None:
    """The hdfs:// and webhdfs:// rows, on one NameNode and DataNode."""
    from functions.devstack.hdfs import HdfsCluster

    with HdfsCluster(root / "hdfs") as cluster:
        # libhdfs reads its environment once, when the first HadoopFileSystem loads it.
        os.environ.update(cluster.env())
        bench = HdfsBench(cluster, source, paths, args.workers)
        hdfs_uri, webhdfs_uri = cluster.hdfs_uri, cluster.webhdfs_uri
        ours, base, mib = best(args.repeat, bench.publish(hdfs_uri), bench.copy_files, bench.clean)
        row("publish (hdfs://)", ours, base, "pyarrow.fs.copy_files into HadoopFileSystem",
            0.9, mib)  # fmt: skip
        ours, base, mib = best(args.repeat, bench.publish(webhdfs_uri), bench.put, bench.clean)
        row("publish (webhdfs://)", ours, base, "requests: WebHDFS CREATE + PUT per file",
            0.9, mib)  # fmt: skip
        bench.publish_for_verify()
        ours, base, mib = best(args.repeat, bench.verify(hdfs_uri), bench.open_input_stream)
        row("verify (hdfs://)", ours, base, "HadoopFileSystem.open_input_stream + hashlib",
            0.8, mib)  # fmt: skip
        ours, base, mib = best(args.repeat, bench.verify(webhdfs_uri), bench.get)
        row("verify (webhdfs://)", ours, base, "requests: WebHDFS OPEN (GET) + hashlib",
            0.8, mib)  # fmt: skip
        bench.close()


class HdfsBench:
    """Ours and the raw baselines on one cluster; every run writes a new prefix
    under /ours or /raw, which ``clean`` empties between runs (untimed)."""

    VERIFIED = "/verify/m"

    def __init__(self, cluster: Any, source: Path, paths: list[Path], workers: int) -> None:
        import pyarrow
        import pyarrow.fs as pafs

        pyarrow.set_io_thread_count(workers)  # copy_files' threads
        self.cluster, self.source, self.paths, self.workers = cluster, source, paths, workers
        self.keys = [p.relative_to(source).as_posix() for p in paths]
        self.hdfs = pafs.HadoopFileSystem("127.0.0.1", cluster.rpc_port)
        self.rest = f"http://127.0.0.1:{cluster.http_port}/webhdfs/v1"
        self._local = threading.local()
        self._sessions: list[Any] = []

    def _session(self) -> Any:
        if not hasattr(self._local, "session"):
            import requests

            self._local.session = requests.Session()
            self._sessions.append(self._local.session)
        return self._local.session

    def _on_threads(self, task: Callable[[Any], Any], items: list[Any]) -> None:
        with ThreadPoolExecutor(self.workers) as pool:
            for _ in pool.map(task, items):
                pass

    def clean(self) -> None:
        for folder in ("/ours", "/raw"):
            self.hdfs.delete_dir_contents(folder, missing_dir_ok=True)

    def close(self) -> None:
        for session in self._sessions:
            session.close()

    # -- publish --------------------------------------------------------------

    def publish(self, uri: Callable[[str], str]) -> Callable[[], None]:
        from loader.publish import publish_version
        from loader.storage import open_storage

        def run() -> None:
            storage = open_storage(uri(f"/ours/{uuid.uuid4().hex[:8]}/m"))
            try:
                publish_version(self.source, storage, "m", 1, workers=self.workers)
            finally:
                storage.close()

        return run

    def copy_files(self) -> None:
        import pyarrow.fs as pafs

        pafs.copy_files(
            str(self.source), f"/raw/{uuid.uuid4().hex[:8]}/m/1",
            source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.hdfs,
            chunk_size=8 * MIB, use_threads=True,
        )  # fmt: skip

    def put(self) -> None:
        prefix = f"{self.rest}/raw/{uuid.uuid4().hex[:8]}/m/1"

        def one(pair: tuple[Path, str]) -> None:
            path, key = pair
            create = self._session().put(
                f"{prefix}/{key}", params={"op": "CREATE", "overwrite": "true"},
                allow_redirects=False, timeout=60,
            )  # fmt: skip
            assert create.status_code == 307, create.text
            with path.open("rb") as body:
                done = self._session().put(create.headers["Location"], data=body, timeout=120)
            assert done.status_code == 201, done.text

        self._on_threads(one, list(zip(self.paths, self.keys, strict=True)))

    # -- verify ---------------------------------------------------------------

    def publish_for_verify(self) -> None:
        from loader.publish import publish_version
        from loader.storage import open_storage

        storage = open_storage(self.cluster.hdfs_uri(self.VERIFIED))
        publish_version(self.source, storage, "m", 1, workers=self.workers)
        storage.close()

    def verify(self, uri: Callable[[str], str]) -> Callable[[], None]:
        from loader.storage import open_storage
        from loader.verify import Verdict, verify_version

        storage = open_storage(uri(self.VERIFIED))

        def run() -> None:
            report = verify_version(storage, "1", workers=self.workers)
            assert report.verdict is Verdict.COMPLETE, report.problems

        return run

    def open_input_stream(self) -> None:
        def one(key: str) -> None:
            with self.hdfs.open_input_stream(f"{self.VERIFIED}/1/{key}") as stream:
                _hash_stream(stream.read)

        self._on_threads(one, self.keys)

    def get(self) -> None:
        def one(key: str) -> None:
            url = f"{self.rest}{self.VERIFIED}/1/{key}"
            with self._session().get(url, params={"op": "OPEN"}, stream=True, timeout=120) as got:
                assert got.status_code == 200, got.text
                _hash_stream(got.raw.read)

        self._on_threads(one, self.keys)


def _hash_stream(read: Callable[[int], bytes]) -> None:
    digest = hashlib.sha256()
    while chunk := read(8 * MIB):
        digest.update(chunk)


def write_report(
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    total: int,
    count: int,
    notes: list[str] | None = None,
) -> None:
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        "# Storage benchmark", "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · {os.cpu_count()} CPUs · one version of "
        f"{total / MIB:.0f} MiB in {count} files ({args.large} x {args.large_mib} MiB, "
        f"{args.small} x {args.small_kib} KiB, half_plus_two) · {args.workers} workers · best "
        f"of {args.repeat} · S3 = SeaweedFS on loopback · HDFS = Hadoop 2.7.3, one NameNode "
        "and one DataNode on loopback (-Xmx256m each; the HDFS baselines use the same "
        f"{args.workers} threads as ours) · peak RSS of the whole run "
        f"{peak_mib:.0f} MiB (TensorFlow included); RSS growth = what one operation adds "
        "(sampled every 10 ms).", "",
        "| operation | ours s | ours MiB/s | baseline | baseline s | baseline MiB/s | ratio | "
        "target | result | ours: RSS growth |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|---:|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['operation']} | {r['ours_s']:.2f} | {r['ours_mib_s']:,.0f} | {r['baseline']} | "
            f"{r['baseline_s']:.2f} | {r['baseline_mib_s']:,.0f} | {r['ratio']:.2f} | "
            f"≥ {r['target']:.2f} | {'PASS' if r['pass'] else 'FAIL'} | "
            f"{r['rss_growth_mib']} MiB |"
        )
    lines += [f"\n{note}" for note in notes or ()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "storage.json").write_text(
        json.dumps({"rows": rows, "peak_rss_mib": round(peak_mib), "notes": notes or []}, indent=2)
    )
    (args.out / "storage.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
