"""functions/serving/batching.py with a fake run function (pure scheduling logic)."""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format

from functions.serving.config_messages import BatchingParameters, read_text_proto
from functions.serving.runtime.batching import Batcher, BatchingOptions, pad_to_common_shape
from loader.errors import ConfigError, InvalidArgument, Unavailable

SHARED = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "tf_serving"


class Recorder:
    """A run function that records the batch sizes it was called with."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.batch_sizes.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2.0, "n": inputs["x"].sum(axis=1)}


def run_concurrently(batcher: Batcher, run: Recorder, arrays: list[np.ndarray]) -> list[Any]:
    results: list[Any] = [None] * len(arrays)
    start = threading.Barrier(len(arrays))

    def call(i: int) -> None:
        start.wait()
        results[i] = batcher.run("sig", {"x": arrays[i]}, run)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(arrays))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_concurrent_requests_are_merged_and_split_exactly() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(int(rng.integers(1, 4)), 3)).astype(np.float32) for _ in range(12)]
    batcher = Batcher(BatchingOptions(max_batch_size=64, batch_timeout_seconds=0.2))
    run = Recorder()
    results = run_concurrently(batcher, run, arrays)
    for array, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(result["y"], array * 2.0)
        np.testing.assert_array_equal(result["n"], array.sum(axis=1))
    assert sum(run.batch_sizes) == sum(len(a) for a in arrays)
    assert len(run.batch_sizes) < len(arrays)  # something was merged


def test_batches_are_padded_to_allowed_sizes() -> None:
    batcher = Batcher(BatchingOptions(max_batch_size=8, allowed_batch_sizes=(4, 8)))
    run = Recorder()
    out = batcher.run("sig", {"x": np.ones((3, 2), np.float32)}, run)
    assert run.batch_sizes == [4]
    assert out["y"].shape == (3, 2)


def test_a_full_queue_is_unavailable() -> None:
    """One batch running (blocked), one waiting: the queue (1 batch of 1) is full."""
    gate, started = threading.Event(), threading.Event()

    def blocked(inputs: dict[str, Any]) -> dict[str, Any]:
        started.set()
        gate.wait(10)
        return {"y": inputs["x"]}

    batcher = Batcher(
        BatchingOptions(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    )
    one = np.ones((1, 1))
    running = threading.Thread(target=batcher.run, args=("sig", {"x": one}, blocked))
    running.start()
    assert started.wait(10)
    waiting = threading.Thread(target=batcher.run, args=("sig", {"x": one}, blocked))
    waiting.start()
    (queue,) = batcher._queues.values()
    for _ in range(1000):  # until the second task is queued behind the running one
        if queue._rows == 1:
            break
        threading.Event().wait(0.005)
    try:
        with pytest.raises(Unavailable) as info:
            batcher.run("sig", {"x": one}, blocked)
        assert "queue" in info.value.message
    finally:
        gate.set()
        running.join(10)
        waiting.join(10)


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ({"x": np.ones((9, 1))}, "Task size 9 is larger than maximum input batch size 8"),
        ({"x": np.float32(1.0)}, "at least one dimension"),
        ({"x": np.ones((2, 1)), "z": np.ones((3, 1))}, "equal 0th-dimension size"),
    ],
)
def test_bad_tasks(inputs: dict[str, Any], fragment: str) -> None:
    batcher = Batcher(BatchingOptions(max_batch_size=8))
    with pytest.raises(InvalidArgument) as info:
        batcher.run("sig", {k: np.asarray(v) for k, v in inputs.items()}, Recorder())
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be positive; was 0"),
        ({"num_batch_threads": 0}, "num_batch_threads must be positive; was 0"),
        ({"max_enqueued_batches": -1}, "max_enqueued_batches must be positive; was -1"),
        (
            {"max_enqueued_batches": 0, "enable_large_batch_splitting": True},
            "max_enqueued_batches must be positive; was 0",
        ),
        ({"batch_timeout_seconds": -0.001}, "batch_timeout_micros must be non-negative; was -1000"),
        (
            {"max_batch_size": 8, "allowed_batch_sizes": (4, 2, 8)},
            "allowed_batch_sizes entries must be monotonically increasing",
        ),
        (
            {"max_batch_size": 8, "allowed_batch_sizes": (2, 4)},
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; "
            "expected 8",
        ),
        (
            {"max_batch_size": 4, "enable_large_batch_splitting": True,
             "max_execution_batch_size": 8},
            "When enable_large_batch_splitting is true, input_batch_size_limit must be greater "
            "than or equal to max_execution_batch_size (max_batch_size is 4, "
            "max_execution_batch_size is 8)",
        ),
        (
            {"max_batch_size": 8, "enable_large_batch_splitting": True,
             "max_execution_batch_size": 0},
            "max_execution_batch_size must be positive; was 0",
        ),
        (
            # WrapSessionForBatching checks max_batch_size, also with splitting.
            {"max_batch_size": 8, "enable_large_batch_splitting": True,
             "max_execution_batch_size": 4, "allowed_batch_sizes": (2, 4)},
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4",
        ),
    ],
    ids=[
        "max-batch-size", "threads", "negative-queue", "zero-queue-splitting", "timeout",
        "allowed-not-increasing", "allowed-last", "execution-above-max", "execution-zero",
        "allowed-last-splitting",
    ],
)  # fmt: skip
def test_invalid_options(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        BatchingOptions(**options)
    assert fragment in info.value.message
    assert info.value.message.startswith("BatchingParameters: ")


def test_defaults_are_tf_servings_queue_options() -> None:
    options = BatchingOptions()
    assert (options.max_batch_size, options.max_enqueued_batches) == (1000, 10)
    assert options.batch_timeout_seconds == 0.0
    assert not options.enable_large_batch_splitting
    assert options.execution_batch_size == 1000
    # TF's AddQueue turns 0 into 1 when splitting is off.
    assert BatchingOptions(max_enqueued_batches=0).max_enqueued_batches == 1
    splitting = BatchingOptions(max_batch_size=16, enable_large_batch_splitting=True)
    assert splitting.execution_batch_size == 16  # unset: max_batch_size


def parse_batching(text: str) -> Any:
    params = BatchingParameters()
    text_format.Parse(text, params)
    return params


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "max_batch_size { value: 32 }\nenable_large_batch_splitting { value: true }\n"
            "max_execution_batch_size { value: 8 }\nallowed_batch_sizes: [4, 32]",
            BatchingOptions(max_batch_size=32, enable_large_batch_splitting=True,
                            max_execution_batch_size=8, allowed_batch_sizes=(4, 32)),
        ),
        (
            "max_batch_size { value: 32 }\nenable_large_batch_splitting { value: true }",
            BatchingOptions(max_batch_size=32, enable_large_batch_splitting=True),
        ),
        (  # as in TF Serving, max_execution_batch_size counts only with splitting
            "max_batch_size { value: 32 }\nmax_execution_batch_size { value: 8 }",
            BatchingOptions(max_batch_size=32),
        ),
        (
            "max_batch_size { value: 32 }\nenable_large_batch_splitting { value: false }\n"
            "max_execution_batch_size { value: 8 }",
            BatchingOptions(max_batch_size=32),
        ),
    ],
    ids=["split", "split-default-execution-size", "execution-without-split", "split-false"],
)  # fmt: skip
def test_splitting_fields_are_read_from_the_file(text: str, expected: BatchingOptions) -> None:
    assert BatchingOptions.from_proto(parse_batching(text)) == expected


def test_splitting_field_types_and_numbers_are_tf_servings() -> None:
    fields = {f.name: f for f in BatchingParameters.DESCRIPTOR.fields}
    assert fields["enable_large_batch_splitting"].number == 8
    assert fields["enable_large_batch_splitting"].message_type.full_name == (
        "google.protobuf.BoolValue"
    )
    assert fields["max_execution_batch_size"].number == 9
    assert fields["max_execution_batch_size"].message_type.full_name == (
        "google.protobuf.Int64Value"
    )


# ------------------------------------------------------------ large-batch splitting


class Gate:
    """A run function whose first call blocks until released; records batches."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.batches: list[np.ndarray] = []
        self._lock = threading.Lock()

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            first = not self.batches
            self.batches.append(inputs["x"].copy())
        if first:
            self.started.set()
            self.release.wait(10)
        return {"y": inputs["x"] * 2.0, "n": inputs["x"].sum(axis=1)}


def call_in_thread(batcher: Batcher, x: np.ndarray, run: Any, out: dict[str, Any]) -> Any:
    def call() -> None:
        try:
            out["result"] = batcher.run("sig", {"x": x}, run)
        except Exception as err:  # handed to the test
            out["error"] = err

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def wait_for_rows(batcher: Batcher, rows: int) -> None:
    (queue,) = batcher._queues.values()
    for _ in range(2000):
        if queue._rows == rows:
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"queue never held {rows} rows (has {queue._rows})")


def splitting(**overrides: Any) -> BatchingOptions:
    base: dict[str, Any] = {"max_batch_size": 10, "enable_large_batch_splitting": True,
                            "max_execution_batch_size": 4, "num_batch_threads": 1}  # fmt: skip
    return BatchingOptions(**{**base, **overrides})


def test_a_request_above_the_execution_size_is_split_and_joined_in_order() -> None:
    batcher = Batcher(splitting())
    run = Recorder()
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    out = batcher.run("sig", {"x": x}, run)
    assert run.batch_sizes == [4, 4, 2]
    np.testing.assert_array_equal(out["y"], x * 2.0)
    np.testing.assert_array_equal(out["n"], x.sum(axis=1))


def test_pieces_fill_the_open_batch_beside_other_requests() -> None:
    """TF's eager split: B's first piece fills A's open batch, the rest follow."""
    batcher = Batcher(splitting())
    run = Gate()
    w, a = np.full((4, 1), -1.0, np.float32), np.arange(3, dtype=np.float32).reshape(3, 1)
    b = np.arange(100, 106, dtype=np.float32).reshape(6, 1)
    outs: list[dict[str, Any]] = [{}, {}, {}]
    threads = [call_in_thread(batcher, w, run, outs[0])]
    assert run.started.wait(10)  # W runs (and blocks): the queue is empty
    threads.append(call_in_thread(batcher, a, run, outs[1]))
    wait_for_rows(batcher, 3)
    threads.append(call_in_thread(batcher, b, run, outs[2]))
    wait_for_rows(batcher, 9)
    run.release.set()
    for thread in threads:
        thread.join(10)
    assert [len(batch) for batch in run.batches] == [4, 4, 4, 1]
    np.testing.assert_array_equal(run.batches[1], np.concatenate([a, b[:1]]))
    np.testing.assert_array_equal(run.batches[2], b[1:5])
    np.testing.assert_array_equal(run.batches[3], b[5:])
    for x, out in zip((w, a, b), outs, strict=True):
        np.testing.assert_array_equal(out["result"]["y"], x * 2.0)


def test_splitting_bounds_a_request_by_max_batch_size() -> None:
    batcher = Batcher(splitting())
    with pytest.raises(InvalidArgument) as info:
        batcher.run("sig", {"x": np.ones((11, 1), np.float32)}, Recorder())
    assert info.value.message == "Task size 11 is larger than maximum input batch size 10"


def test_splitting_queue_capacity_is_in_execution_sized_batches() -> None:
    """Capacity: max_enqueued_batches * max_execution_batch_size rows, less those queued."""
    batcher = Batcher(splitting(max_batch_size=8, max_execution_batch_size=2,
                                max_enqueued_batches=2))  # fmt: skip
    run = Gate()
    out: dict[str, Any] = {}
    running = call_in_thread(batcher, np.ones((2, 1), np.float32), run, out)
    assert run.started.wait(10)
    try:
        with pytest.raises(Unavailable) as info:
            batcher.run("sig", {"x": np.ones((5, 1), np.float32)}, run)
        assert info.value.message == (
            "The batch scheduling queue to which this task was submitted is full; task size "
            "is 5 but scheduling capacity is only 4 (num_enqueued_batches=1, "
            "max_enqueued_batches=2, open_batch_size=0, max_execution_batch_size=2)"
        )
        fits: dict[str, Any] = {}
        queued = call_in_thread(batcher, np.ones((4, 1), np.float32), run, fits)
        wait_for_rows(batcher, 4)
    finally:
        run.release.set()
        running.join(10)
    queued.join(10)
    assert [len(batch) for batch in run.batches] == [2, 2, 2]
    np.testing.assert_array_equal(fits["result"]["y"], np.full((4, 1), 2.0))


def test_split_pieces_padded_differently_are_joined_padded() -> None:
    """pad_variable_length_inputs with splitting: B's pieces land in batches padded
    to inner sizes 5 and 2; its outputs are padded to 5 before they are joined."""
    batcher = Batcher(splitting(max_execution_batch_size=2, pad_variable_length_inputs=True))
    run = Gate()
    w = np.ones((2, 1), np.float32)
    a = np.arange(5, dtype=np.float32).reshape(1, 5)
    b = np.arange(10, 16, dtype=np.float32).reshape(3, 2)
    outs: list[dict[str, Any]] = [{}, {}, {}]
    threads = [call_in_thread(batcher, w, run, outs[0])]
    assert run.started.wait(10)
    threads.append(call_in_thread(batcher, a, run, outs[1]))
    wait_for_rows(batcher, 1)
    threads.append(call_in_thread(batcher, b, run, outs[2]))
    wait_for_rows(batcher, 4)
    run.release.set()
    for thread in threads:
        thread.join(10)
    assert [batch.shape for batch in run.batches] == [(2, 1), (2, 5), (2, 2)]
    np.testing.assert_array_equal(outs[1]["result"]["y"], a * 2.0)
    y = outs[2]["result"]["y"]
    assert y.shape == (3, 5)
    np.testing.assert_array_equal(y[:, :2], b * 2.0)


def test_tf_servings_batching_config_loads() -> None:
    params = read_text_proto(str(SHARED / "batching_config.txt"), BatchingParameters)
    options = BatchingOptions.from_proto(params)
    assert options == BatchingOptions(
        max_batch_size=128, batch_timeout_seconds=0.0, max_enqueued_batches=1000000,
        num_batch_threads=8,
    )  # fmt: skip


def test_padding_follows_tf_servings_batching_util() -> None:
    """Pads at the end of each inner dimension with the tensor's first element."""
    a = np.array([[[1, 2]]], np.int32)  # (1, 1, 2)
    b = np.array([[[7], [8], [9]]], np.int32)  # (1, 3, 1)
    pa, pb = pad_to_common_shape([{"x": a}, {"x": b}])
    np.testing.assert_array_equal(pa["x"], [[[1, 2], [1, 1], [1, 1]]])
    np.testing.assert_array_equal(pb["x"], [[[7, 7], [8, 7], [9, 7]]])
    assert pa["x"].shape == pb["x"].shape == (1, 3, 2)


def test_padding_leaves_equal_shapes_alone_and_refuses_what_tf_refuses() -> None:
    same = np.ones((2, 3))
    (out,) = pad_to_common_shape([{"x": same}])
    assert out["x"] is same
    with pytest.raises(InvalidArgument, match="empty tensor in batch of non-empty"):
        pad_to_common_shape([{"x": np.ones((1, 0))}, {"x": np.ones((1, 2))}])
    rank7 = (1, 1, 1, 1, 1, 1)
    with pytest.raises(InvalidArgument, match="rank from 1 to 6"):
        pad_to_common_shape([{"x": np.ones((1, *rank7))}, {"x": np.ones((1, 2, *rank7[1:]))}])


def test_padding_is_bounded_by_what_the_batch_holds() -> None:
    """[1, 10000, 1] and [1, 1, 10000] would pad to 800 MB from 80 KB."""
    a = np.ones((1, 10_000, 1), np.float32)
    b = np.ones((1, 1, 10_000), np.float32)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidArgument) as info:
            pad_to_common_shape([{"x": a}, {"x": b}])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert info.value.message == (
        'Padding input "x" of 2 batched tasks to inner shape [10000, 10000] needs 800000000 '
        f"bytes, more than the {64 * 80_000 + 64 * 2**20}-byte limit (64 x their 80000 "
        "unpadded bytes + 64 MiB)"
    )
    # 4.5M padded strings: 36 MB of pointers, but 65 bytes each once fed to TensorFlow.
    tall, wide = np.full((1, 1500, 1), b"s", object), np.full((1, 1, 1500), b"s", object)
    with pytest.raises(InvalidArgument, match='input "s"'):
        pad_to_common_shape([{"s": tall}, {"s": wide}])
    ok = pad_to_common_shape([{"x": np.ones((1, 100, 1))}, {"x": np.ones((1, 1, 100))}])
    assert ok[0]["x"].shape == (1, 100, 100)


def test_variable_length_requests_share_a_batch_when_padding_is_on() -> None:
    batcher = Batcher(
        BatchingOptions(
            max_batch_size=16, batch_timeout_seconds=0.3, pad_variable_length_inputs=True
        )
    )
    run = Recorder()
    arrays = [np.full((1, n), float(n), np.float32) for n in (1, 2, 3, 4)]
    results = run_concurrently(batcher, run, arrays)
    assert run.batch_sizes == [4]  # one TF call for all four
    for array, result in zip(arrays, results, strict=True):
        assert result["y"].shape == (1, 4)  # outputs stay padded, as in TF Serving
        np.testing.assert_array_equal(result["y"][:, : array.shape[1]], array * 2.0)


def test_pad_variable_length_inputs_is_read_from_the_file() -> None:
    params = BatchingParameters()
    params.pad_variable_length_inputs = True
    assert BatchingOptions.from_proto(params).pad_variable_length_inputs
