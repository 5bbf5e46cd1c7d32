"""The pure parts of the soak benchmark: its plan, /proc and metrics parsing, and
the summary maths (RSS growth, per-minute failures, the verdict). No timing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tests.bench.bench_soak import (
    LOADER_RESTART,
    Growth,
    VersionDirs,
    config_text,
    effect_times,
    failures_of,
    log_problems,
    markdown,
    minute_rows,
    non_ok,
    parent_pid,
    request_counts,
    rss_growth,
    rss_series,
    schedule,
    verdict,
    vm_rss_kib,
)


def test_schedule_spaces_each_action_and_restarts_the_loader_once_halfway() -> None:
    plan = schedule(120.0, {"reload": (15.0, 30.0), "publish": (30.0, 60.0)})
    assert plan == [
        (15.0, "reload"),
        (30.0, "publish"),
        (45.0, "reload"),
        (60.0, LOADER_RESTART),
        (75.0, "reload"),
        (90.0, "publish"),
        (105.0, "reload"),
    ]
    # nothing in the last 10 s, where its effect could not be seen
    assert schedule(50.0, {"publish": (30.0, 60.0)}) == [(25.0, LOADER_RESTART), (30.0, "publish")]
    assert schedule(40.0, {"publish": (30.0, 60.0)}) == [(20.0, LOADER_RESTART)]


def test_proc_parsing() -> None:
    status = "Name:\tpython\nVmPeak:\t 900 kB\nVmRSS:\t  708736 kB\nThreads:\t40\n"
    assert vm_rss_kib(status) == 708736
    assert vm_rss_kib("Name:\tkthreadd\n") == 0
    assert parent_pid("4242 (python3) S 17 4242 4242 0 -1") == 17
    assert parent_pid("99 (a) b (c)) R 1234 99 99") == 1234  # a command name with ") "


METRICS = """# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="half_plus_two",status="OK"} 1200
:tensorflow:serving:request_count{model_name="side",status="OK"} 3
:tensorflow:serving:request_count{model_name="half_plus_two",status="NOT_FOUND"} 2
# TYPE :tensorflow:serving:request_latency histogram
:tensorflow:serving:request_latency_count{model_name="half_plus_two",API="predict"} 1200
"""


def test_request_counts_sum_models_by_status_and_non_ok_is_the_delta() -> None:
    after = request_counts(METRICS)
    assert after == {"OK": 1203.0, "NOT_FOUND": 2.0}
    assert non_ok({"OK": 10.0}, after) == {"NOT_FOUND": 2}
    assert non_ok({"OK": 10.0, "NOT_FOUND": 2.0}, after) == {}
    assert non_ok(None, after) == non_ok(after, None) == {"metrics scrape failed": 1}
    assert request_counts("") == {}


def test_rss_growth_compares_the_median_after_the_first_minute_with_the_end() -> None:
    points = [(float(t), 1000) for t in range(0, 60, 2)]  # the first minute: not counted
    points += [(float(t), 1000 if t != 62 else 5000) for t in range(60, 70, 2)]  # one spike
    points += [(float(t), 1050) for t in range(70, 200, 2)]
    growth = rss_growth(points)
    assert growth == Growth(start_t=60.0, base_kib=1000, end_kib=1050, growth_pct=5.0)


def test_rss_growth_needs_both_windows() -> None:
    assert rss_growth([]) is None
    assert rss_growth([(float(t), 1000) for t in range(0, 78, 2)]) is None  # ends at 76 s
    assert rss_growth([(float(t), 1000) for t in range(0, 82, 2)]) is not None


def test_rss_series_splits_a_role_by_process() -> None:
    samples = [
        (0.0, "loader", 11, 100),
        (0.0, "serve", 20, 700),
        (2.0, "loader", 11, 101),
        (4.0, "loader", 12, 90),
        (4.0, "serve", 20, 701),
    ]
    assert rss_series(samples) == {
        "loader": [(0.0, 100), (2.0, 101)],
        "serve": [(0.0, 700), (4.0, 701)],
        "loader #2": [(4.0, 90)],
    }


def load(errors: int = 0) -> dict[str, Any]:
    return {
        "requests_per_second": 300.0,
        "p50_ms": 1.0,
        "p99_ms": 9.0,
        "requests": 18000,
        "errors": errors,
    }


def test_minute_rows_tile_the_run_and_count_every_kind_of_failure() -> None:
    slices = [
        {"end_s": 61.0, "loads": {"a/grpc": load(), "a/rest": load(2)}, "server_non_ok": {"a": {}}},
        {
            "end_s": 122.5,
            "loads": {"a/grpc": {"error": "h2load failed"}, "a/rest": load()},
            "server_non_ok": {"a": {"UNAVAILABLE": 3}},
        },
    ]
    rows = minute_rows(slices, {"a": [10.0, 61.0, 61.5]})  # 61.0 falls in the second slice
    assert [(r["minute"], r["start_s"], r["end_s"]) for r in rows] == [
        (1, 0.0, 61.0),
        (2, 61.0, 122.5),
    ]
    assert [r["probe_failures"] for r in rows] == [{"a": 1}, {"a": 2}]
    assert [(r["tool_errors"], r["load_runs_failed"]) for r in rows] == [(2, 0), (0, 1)]
    assert [failures_of(r) for r in rows] == [3, 6]


def test_effect_times_from_the_probes_first_answer() -> None:
    events = [
        {
            "t": 30.0,
            "kind": "publish",
            "ok": True,
            "error": "",
            "server": "a",
            "version": 2,
            "seconds": 0.3,
        },
        {
            "t": 90.0,
            "kind": "publish",
            "ok": True,
            "error": "",
            "server": "a",
            "version": 3,
            "seconds": 0.3,
        },
        {"t": 45.0, "kind": "reload", "ok": True, "error": "", "seconds": 0.05},
        {"t": 60.0, "kind": "loader_restart", "ok": False, "error": "boom", "seconds": 4.0},
    ]
    rows = effect_times(events, {"a": {1: 0.2, 2: 31.25}})
    assert [(r["ok"], r["took_s"]) for r in rows] == [
        (True, 1.25),
        (False, None),
        (True, 0.05),
        (False, 4.0),
    ]
    assert rows[1]["error"] == "version 3 never answered the probe"


def test_verdict() -> None:
    row = minute_rows(
        [{"end_s": 60.0, "loads": {"a/grpc": load()}, "server_non_ok": {"a": {}}}], {"a": []}
    )
    ok_event = [{"ok": True}]
    small = {"serve": Growth(60.0, 1000, 1050, 5.0), "loader #2": None}
    passed = verdict(row, small, ok_event)
    assert passed["pass"] and passed["failed_requests"] == 0 and passed["max_growth_pct"] == 5.0
    assert not verdict(row, {"serve": Growth(60.0, 1000, 1100, 10.0)}, ok_event)["rss_ok"]
    assert not verdict(row, {"serve": None}, ok_event)["rss_ok"]  # nothing judged: no pass
    assert not verdict(row, small, [{"ok": False}])["pass"]
    failing = minute_rows(
        [{"end_s": 60.0, "loads": {"a/grpc": load(1)}, "server_non_ok": {"a": {}}}], {"a": []}
    )
    assert verdict(failing, small, ok_event)["failed_requests"] == 1


@pytest.mark.parametrize("wide", [False, True])
def test_both_configs_parse_and_keep_the_model(wide: bool) -> None:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(config_text(Path("/m/hp"), Path("/m/side"), wide), config)
    models = {c.name: c for c in config.model_config_list.config}
    assert models["half_plus_two"].base_path == "/m/hp"
    assert ("side" in models) == wide
    assert models["half_plus_two"].model_version_policy.latest.num_versions == (2 if wide else 0)


def test_version_dirs_rename_in_and_keep_the_newest(tmp_path: Path) -> None:
    dirs = VersionDirs(tmp_path / "base", tmp_path / "scratch", keep=2)
    assert [dirs.add_next() for _ in range(3)] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "base").iterdir()) == ["2", "3"]
    assert (tmp_path / "base" / "3" / "saved_model.pb").is_file()
    assert not list((tmp_path / "scratch").iterdir())


def test_markdown_has_a_row_per_minute_and_the_verdict() -> None:
    rows = minute_rows(
        [
            {
                "end_s": 60.0,
                "loads": {
                    f"{s}/{a}": load() for s in ("assignments", "config") for a in ("grpc", "rest")
                },
                "server_non_ok": {"config": {"UNAVAILABLE": 1}},
            }
        ],
        {"config": []},
    )
    growth = {"serve --assignments": Growth(60.0, 1024.0, 1024.0, 0.0)}
    document = {
        "meta": {
            "date": "d",
            "cpus": 2,
            "minutes": 1,
            "slice_seconds": 60.0,
            "connections": 8,
            "rate_per_api_per_server": 300.0,
            "interrupted": False,
        },
        "minutes": rows,
        "events": [],
        "rss": {
            "growth": {
                "serve --assignments": vars(growth["serve --assignments"]),
                "loader #2": None,
            }
        },
        "probes": {"config": {"requests": 300}},
        "verdict": verdict(rows, growth, []),
    }
    text = markdown(document)
    assert "| 1 | 300/s, 1.0 / 9.0 ms |" in text
    assert "**1** (config UNAVAILABLE 1)" in text
    assert "| loader #2 | — |" in text
    assert "overall: **FAIL**" in text


def test_log_problems_keeps_warnings_and_worse(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    log.write_text(
        "I0000 oneDNN custom operations are on\n"
        '{"time": "t1", "level": "INFO", "logger": "a", "message": "fine"}\n'
        '{"time": "t2", "level": "WARNING", "logger": "b", "message": "slow"}\n'
        '{"time": "t3", "level": "ERROR", "logger": "c", "message": "bad"}\n'
        "{not json\n"
    )
    assert log_problems(log) == ["t2 WARNING b: slow", "t3 ERROR c: bad"]
    assert log_problems(log, most=1) == ["t2 WARNING b: slow"]
    assert log_problems(tmp_path / "missing.log") == []
