"""The pure parts of the benchmarks' C load generators: framing and parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.loadgen import (
    Load,
    grpc_frame,
    h2load_argv,
    paced_per_connection,
    parse_h2load_log,
    parse_h2load_summary,
    parse_wrk_output,
    percentile_ms,
    wrk_paced_script,
    wrk_script,
)


def test_grpc_frame_is_flag_length_and_message() -> None:
    assert grpc_frame(b"") == b"\x00\x00\x00\x00\x00"
    assert grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
    big = b"x" * 70000
    framed = grpc_frame(big)
    assert framed[:5] == b"\x00\x00\x01\x11\x70" and framed[5:] == big


def test_h2load_log_keeps_2xx_latencies_and_counts_the_rest_as_errors() -> None:
    rows = [
        "1796178384241693\t200\t2398\n",
        "1796178384243006\t200\t2061\n",
        "1796178384243007\t-1\t12\n",  # failed stream
        "1796178384243008\t503\t900\n",
        "\n",
    ]
    assert parse_h2load_log(rows) == ([2398, 2061], 2)


def test_h2load_summary_failures() -> None:
    text = (
        "finished in 4.00s, 2202.33 req/s, 273.26KB/s\n"
        "requests: 6607 total, 6607 started, 6600 done, 6600 succeeded, 3 failed, "
        "2 errored, 1 timeout\n"
    )
    assert parse_h2load_summary(text) == 6
    assert parse_h2load_summary("nothing") == 0


@pytest.mark.parametrize(("q", "expected"), [(50, 0.005), (99, 0.010), (100, 0.010), (1, 0.001)])
def test_percentile_is_nearest_rank(q: float, expected: float) -> None:
    assert percentile_ms(list(range(10, 0, -1)), q) == expected
    assert percentile_ms([], q) == 0.0


def test_wrk_output_parses_our_done_line() -> None:
    text = (
        "Running 3s test @ http://127.0.0.1:1/v1/models/m:predict\n"
        "  1 threads and 4 connections\n"
        "ROLLWAY_WRK 8000 2000000 1152 11026 100 1 2 3 4\n"
        "Requests/sec:   4000.00\n"
    )
    assert parse_wrk_output(text) == Load(
        requests_per_second=3950.0, p50_ms=1.152, p99_ms=11.026, requests=7900, errors=110
    )


def test_wrk_output_without_our_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="ROLLWAY_WRK"):
        parse_wrk_output("Requests/sec: 1\n")


def test_wrk_script_posts_the_body_file() -> None:
    script = wrk_script(Path("/tmp/body.json"), "application/json")
    assert 'wrk.method = "POST"' in script
    assert 'io.open("/tmp/body.json", "rb")' in script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script


def test_h2load_argv_adds_rps_only_when_paced() -> None:
    plain = h2load_argv("http://127.0.0.1:1/m", Path("/b"), Path("/l"), 8, 5.0)
    assert plain[:2] == ["h2load", "http://127.0.0.1:1/m"]
    assert "--data" in plain and "--log-file=/l" in plain
    assert not any(arg.startswith("--rps") for arg in plain)
    paced = h2load_argv("http://127.0.0.1:1/m", Path("/b"), Path("/l"), 8, 5.0, 1, 1, 40)
    assert paced == [*plain, "--rps=40"]


@pytest.mark.parametrize(
    ("rate", "connections", "expected"), [(0, 8, 0), (320, 8, 40), (3, 8, 1), (100, 0, 100)]
)
def test_paced_per_connection(rate: float, connections: int, expected: int) -> None:
    assert paced_per_connection(rate, connections) == expected


def test_wrk_paced_script_adds_a_delay_hook() -> None:
    plain = wrk_script(Path("/tmp/body.json"), "application/json")
    assert wrk_paced_script(Path("/tmp/body.json"), "application/json", 0) == plain
    paced = wrk_paced_script(Path("/tmp/body.json"), "application/json", 25.4)
    assert paced == plain + "delay = function() return 25 end\n"
