"""Server-side request batching (``--enable_batching``), as TF Serving's
BatchingSession: concurrent requests for the same model version, signature
and inner shapes are concatenated along dimension 0, run once, and split back.

Contract: batching never changes a result. Only requests whose inputs agree on
every dimension but the first are merged (the key below), a batch is padded
up to the next ``allowed_batch_sizes`` entry by repeating its first row, and
each caller gets exactly its own rows back.

With ``pad_variable_length_inputs`` (TF Serving's ``batching_util``), requests
that differ in inner dimensions share a queue too: each input is padded at the
end of every dimension but the first, up to the batch's largest size, with its
own first element, and outputs come back at the padded size (TF Serving does
not unpad either). Only ranks 1 to 6 can be padded, as in TF's PadOp.

A full queue answers UNAVAILABLE, as TF Serving does. Workers are started on
demand and leave when idle, so a version that is unloaded takes its queues with
it.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from functions.serving import metrics
from loader.errors import ConfigError, InvalidArgument, RollwayError, Unavailable

Arrays = dict[str, npt.NDArray[Any]]
RunFn = Callable[[Arrays], Arrays]
IDLE_SECONDS = 5.0


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's BatchingParameters, with its defaults."""

    max_batch_size: int = 1000
    batch_timeout_seconds: float = 0.0
    max_enqueued_batches: int = 100
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_enqueued_batches < 1 or self.num_batch_threads < 1:
            raise ConfigError(
                "batching: max_batch_size, max_enqueued_batches and num_batch_threads must be >= 1"
            )
        sizes = self.allowed_batch_sizes
        if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != self.max_batch_size):
            raise ConfigError(
                "batching: allowed_batch_sizes must be increasing and end with max_batch_size "
                f"({self.max_batch_size}); got {list(sizes)}"
            )

    @classmethod
    def from_proto(cls, params: Any) -> BatchingOptions:
        def value(name: str, default: Any) -> Any:
            return getattr(params, name).value if params.HasField(name) else default

        return cls(
            max_batch_size=int(value("max_batch_size", cls.max_batch_size)),
            batch_timeout_seconds=int(value("batch_timeout_micros", 0)) / 1e6,
            max_enqueued_batches=int(value("max_enqueued_batches", cls.max_enqueued_batches)),
            num_batch_threads=int(value("num_batch_threads", os.cpu_count() or 1)),
            allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes),
            pad_variable_length_inputs=bool(params.pad_variable_length_inputs),
        )


@dataclass(eq=False)
class _Task:
    inputs: Arrays
    rows: int
    enqueued: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    outputs: Arrays | None = None
    error: RollwayError | None = None


class _Queue:
    def __init__(self, options: BatchingOptions, run: RunFn, on_idle: Callable[[], None]) -> None:
        self._options = options
        self._run = run
        self._on_idle = on_idle
        self._cond = threading.Condition()
        self._tasks: deque[_Task] = deque()
        self._rows = 0
        self._workers = 0

    def submit(self, task: _Task) -> None:
        o = self._options
        with self._cond:
            if self._rows + task.rows > o.max_enqueued_batches * o.max_batch_size:
                raise Unavailable(
                    "The batch scheduling queue to which this task was submitted is full"
                )
            self._tasks.append(task)
            self._rows += task.rows
            if self._workers < o.num_batch_threads:
                self._workers += 1
                threading.Thread(target=self._work, name="rollway-batch", daemon=True).start()
            self._cond.notify_all()

    def _take(self) -> list[_Task] | None:
        """The next batch, or None when the worker should leave (idle)."""
        o = self._options
        with self._cond:
            while not self._tasks:
                if not self._cond.wait(IDLE_SECONDS) and not self._tasks:
                    self._workers -= 1
                    if self._workers == 0:
                        self._on_idle()
                    return None
            deadline = self._tasks[0].enqueued + o.batch_timeout_seconds
            while self._tasks and self._rows < o.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, rows = [], 0
            while self._tasks and rows + self._tasks[0].rows <= o.max_batch_size:
                task = self._tasks.popleft()
                batch.append(task)
                rows += task.rows
            self._rows -= rows
            now = time.monotonic()
            queuing = metrics.batching_queuing_latency.labels(metrics.BATCH_THREAD_POOL)
            for task in batch:
                queuing.observe(metrics.microseconds(now - task.enqueued))
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if batch:
                self._execute(batch)

    def _execute(self, batch: list[_Task]) -> None:
        total = sum(t.rows for t in batch)
        size = self._padded_size(total)
        try:
            inputs = [t.inputs for t in batch]
            if self._options.pad_variable_length_inputs:
                inputs = pad_to_common_shape(inputs)
            merged = {name: np.concatenate([i[name] for i in inputs]) for name in inputs[0]}
            if size > total:
                merged = {
                    k: np.concatenate([v, np.repeat(v[:1], size - total, axis=0)])
                    for k, v in merged.items()
                }
            metrics.batching_wrapped_run_count.inc()
            outputs = self._run(merged)
            for name, value in outputs.items():
                if value.ndim == 0 or value.shape[0] != size:
                    raise InvalidArgument(
                        f"Batched output tensor {name!r} has shape {list(value.shape)}; "
                        f"batching needs its 0th dimension to be the batch size {size}"
                    )
            offset = 0
            for task in batch:
                task.outputs = {k: v[offset : offset + task.rows] for k, v in outputs.items()}
                offset += task.rows
        except RollwayError as err:
            for task in batch:
                task.error = err
        except Exception as err:  # a bug must not strand the waiting callers
            for task in batch:
                task.error = InvalidArgument(f"batched run failed: {type(err).__name__}: {err}")
        finally:
            for task in batch:
                task.done.set()

    def _padded_size(self, rows: int) -> int:
        sizes = self._options.allowed_batch_sizes
        if not sizes:
            return rows
        return sizes[bisect.bisect_left(sizes, rows)]


class Batcher:
    """One queue per (signature, input names, dtypes and inner shapes)."""

    def __init__(self, options: BatchingOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._queues: dict[tuple[Any, ...], _Queue] = {}

    def run(
        self, signature_name: str, inputs: Mapping[str, npt.NDArray[Any]], run: RunFn
    ) -> Arrays:
        rows = _batch_rows(inputs)
        if rows > self.options.max_batch_size:
            raise InvalidArgument(
                f"Task size {rows} is larger than maximum batch size {self.options.max_batch_size}"
            )
        # With padding, inner sizes may differ within a batch; the rank may not.
        pad = self.options.pad_variable_length_inputs
        key = (
            signature_name,
            *((k, v.dtype.str, v.ndim if pad else v.shape[1:]) for k, v in sorted(inputs.items())),
        )
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(self.options, run, lambda: self._forget(key))
        task = _Task(dict(inputs), rows)
        queue.submit(task)
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def _forget(self, key: tuple[Any, ...]) -> None:
        with self._lock:
            self._queues.pop(key, None)


def _batch_rows(inputs: Mapping[str, npt.NDArray[Any]]) -> int:
    sizes = set()
    for value in inputs.values():
        if value.ndim == 0:
            raise InvalidArgument("Batching Run() input tensors must have at least one dimension")
        sizes.add(value.shape[0])
    if len(sizes) != 1:
        raise InvalidArgument("Batching Run() input tensors must have equal 0th-dimension size")
    return int(sizes.pop())


MAX_PAD_RANK = 6


def pad_to_common_shape(tasks: list[Arrays]) -> list[Arrays]:
    """TF Serving's AddPadding: pads each task's inputs at the end of every
    dimension but the first, up to the largest size in the batch, with the
    tensor's own first element. Pure; inputs are not modified."""
    padded: list[Arrays] = [{} for _ in tasks]
    for name in tasks[0]:
        values = [task[name] for task in tasks]
        target = np.max([v.shape for v in values], axis=0)
        for out, value in zip(padded, values, strict=True):
            inner = zip(target[1:], value.shape[1:], strict=True)
            missing = [(0, 0)] + [(0, int(t - s)) for t, s in inner]
            if not any(after for _, after in missing):
                out[name] = value
                continue
            if value.ndim > MAX_PAD_RANK:
                raise InvalidArgument("Only tensors with rank from 1 to 6 can be padded.")
            if value.size == 0:
                raise InvalidArgument("Got empty tensor in batch of non-empty tensors.")
            out[name] = np.pad(value, missing, constant_values=value.flat[0])
    return padded
