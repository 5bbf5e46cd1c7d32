"""functions/serving/batching.py with a fake run function (pure scheduling logic)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from functions.serving.batching import Batcher, BatchingOptions, pad_to_common_shape
from functions.serving.config_messages import BatchingParameters, read_text_proto
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
        ({"x": np.ones((9, 1))}, "Task size 9 is larger than maximum batch size 8"),
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
    "options",
    [
        {"max_batch_size": 0},
        {"num_batch_threads": 0},
        {"max_batch_size": 8, "allowed_batch_sizes": (4, 2, 8)},
        {"max_batch_size": 8, "allowed_batch_sizes": (2, 4)},
    ],
)
def test_invalid_options(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        BatchingOptions(**options)


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
