"""The pure parts of the serving comparison benchmark: targets, rows and markdown."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench.bench_serving_compare import (
    SERVERS,
    Target,
    markdown,
    merge_rows,
    parse_only,
    short,
    targets,
)


def load(rps: float, p99: float = 1.0, errors: int = 0) -> dict[str, Any]:
    return {"requests_per_second": rps, "p50_ms": p99 / 2, "p99_ms": p99, "requests": int(rps),
            "errors": errors}  # fmt: skip


def row(grpc32: float | None, rest32: float | None = None, p99: float = 1.0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if grpc32 is not None:
        out["grpc"] = {"8": load(grpc32 / 2, p99), "32": load(grpc32, p99)}
    if rest32 is not None:
        out["rest"] = {"8": load(rest32 / 2, p99), "32": load(rest32, p99)}
    return out


ROWS = {
    "aio": row(10000),
    "kserve": row(1000, 1000, p99=20.0),
    "rollway": row(3000, 2500, p99=10.0),
    "rollway2": row(5000),
}


def by_name(found: list[Target]) -> dict[str, Target]:
    return {t.name: t for t in found}


def test_targets_are_ratios_at_32_connections() -> None:
    found = by_name(targets(ROWS))
    assert found["1 worker gRPC@32 / KServe gRPC@32"].value == pytest.approx(3.0)
    assert found["1 worker gRPC@32 / KServe gRPC@32"].status == "met"
    assert found["2 workers gRPC@32 / KServe gRPC@32"].value == pytest.approx(5.0)
    assert found["2 workers gRPC@32 / aio constant@32"].value == pytest.approx(0.5)
    assert found["2 workers gRPC@32 / aio constant@32"].status == "missed"
    assert found["1 worker REST@32 / KServe REST@32"].value == pytest.approx(2.5)
    p99 = found["1 worker REST@32 p99 / KServe REST@32 p99"]
    assert p99.value == pytest.approx(0.5)
    assert (p99.op, p99.status) == ("<=", "met")


def test_a_missing_or_failed_side_makes_a_target_not_applicable() -> None:
    rows = {**ROWS, "rollway2": {"not_available": "--workers: unknown flag"}, "kserve": {}}
    rows["rollway"] = {**ROWS["rollway"], "rest": None}
    statuses = {t.name: t.status for t in targets(rows)}
    assert set(statuses.values()) == {"n/a"}


@pytest.mark.parametrize(
    ("value", "op", "threshold", "status"),
    [(2.5, ">=", 2.5, "met"), (2.49, ">=", 2.5, "missed"), (1.0, "<=", 1.0, "met"),
     (1.01, "<=", 1.0, "missed"), (None, ">=", 1.0, "n/a")],
)  # fmt: skip
def test_target_status(value: float | None, op: str, threshold: float, status: str) -> None:
    assert Target("t", value, op, threshold).status == status


def document(rows: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    meta = {
        "date": "2026-01-01 00:00:00", "cpus": 2, "machine": "x86_64", "python": "3.11.7",
        "seconds": 10.0, "notes": ["A note."],
        "versions": {"tensorflow": "2.21.0", "grpcio": "1.85.3", "kserve": "0.21.0"},
    }  # fmt: skip
    return {"meta": meta, "rows": rows, "targets": [asdict(t) for t in targets(rows)]}


def test_markdown_has_a_row_per_server_and_the_targets() -> None:
    raw = {"raw": {"us_per_call": 190.0, "calls_per_s": 5263.0, "session_us_per_call": 21.0,
                   "session_calls_per_s": 47619.0}}  # fmt: skip
    rows = {"raw": raw, **ROWS, "naive": {"grpc": None, "errors": {"grpc": "answer check failed"}}}
    text = markdown(document(merge_rows({}, rows)))
    lines = text.splitlines()
    assert "| server | gRPC @8 | gRPC @32 | REST @8 | REST @32 | notes |" in lines
    kserve = next(line for line in lines if line.startswith(f"| {SERVERS['kserve']} |"))
    assert "| 1,000 (p99 20.00 ms) | 500 (p99 20.00 ms) | 1,000 (p99 20.00 ms) |" in kserve
    aio = next(line for line in lines if line.startswith(f"| {SERVERS['aio']} |"))
    assert aio.endswith("| — | — |  |")  # no REST on the transport-limit server
    assert "grpc: answer check failed" in text
    assert "21.0 µs per call" in text
    assert "| 1 worker gRPC@32 / KServe gRPC@32 | 3.00x | >= 2.5x | met |" in lines
    assert "| 2 workers gRPC@32 / aio constant@32 | 0.50x | >= 0.55x | missed |" in lines
    assert "KServe 0.21.0" in text and "A note." in text
    first_table = lines[: lines.index("## Open Inference Protocol (v2)")]
    server_rows = [
        line for line in first_table if any(line.startswith(f"| {s} |") for s in SERVERS.values())
    ]
    assert [line.split(" | ")[0][2:] for line in server_rows] == [
        SERVERS[k] for k in ("raw", "aio", "naive", "kserve", "rollway", "rollway2")
    ]


def test_markdown_cells_keep_errors_on_one_line() -> None:
    traceback = "Traceback (most recent call last):\n  File x\nImportError: no | pipe"
    text = markdown(document({"rollway": {"not_available": traceback}}))
    line = next(line for line in text.splitlines() if line.startswith(f"| {SERVERS['rollway']}"))
    assert line.endswith("not available: ImportError: no \\| pipe |")


def test_short_takes_the_last_line_and_caps_it() -> None:
    assert short("a\nb\n\n") == "b"
    assert short("x" * 300, chars=10) == "x" * 9 + "…"


def test_merge_rows_keeps_old_rows_and_orders_them() -> None:
    merged = merge_rows({"kserve": {"old": 1}, "raw": {"old": 1}}, {"aio": {"new": 1}, "raw": {}})
    assert list(merged) == ["raw", "aio", "kserve"]
    assert merged["raw"] == {} and merged["kserve"] == {"old": 1}


def test_parse_only() -> None:
    assert parse_only(None) == list(SERVERS)
    assert parse_only("rollway, kserve") == ["kserve", "rollway"]
    with pytest.raises(ValueError, match="nope"):
        parse_only("rollway,nope")


def test_v2_rows_and_ratios_read_kserve_grpc_as_its_v2() -> None:
    rows = {
        "kserve": {**row(1000, 1000), "rest_v2": {"8": load(400), "32": load(800)}},
        "rollway": {
            **row(3000, 2500),
            "grpc_v2": {"8": load(1000), "32": load(2000)},
            "rest_v2": {"8": load(1000), "32": load(1600)},
        },
    }
    found = by_name(targets(rows))
    assert found["1 worker v2 gRPC@32 / KServe v2 gRPC@32"].value == pytest.approx(2.0)
    assert found["1 worker v2 REST@32 / KServe v2 REST@32"].value == pytest.approx(2.0)
    assert found["2 workers v2 REST@32 / KServe v2 REST@32"].status == "n/a"
    lines = markdown(document(rows)).splitlines()
    v2 = lines[lines.index("## Open Inference Protocol (v2)") :]
    kserve = next(line for line in v2 if line.startswith(f"| {SERVERS['kserve']} |"))
    assert kserve.startswith(f"| {SERVERS['kserve']} | 500 (p99 1.00 ms) | 1,000 (p99 1.00 ms) |")
    assert kserve.endswith("| 400 (p99 1.00 ms) | 800 (p99 1.00 ms) |")
