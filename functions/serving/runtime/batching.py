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

With ``enable_large_batch_splitting`` (TF Serving's SharedBatchScheduler
with ``split_input_task_func``), ``max_batch_size`` bounds one request and
``max_execution_batch_size`` one run: a request that does not fit the open
batch is split along dimension 0 into a piece that fills it and pieces of
``max_execution_batch_size`` rows, each a task of its own (pieces of one
request may run in different batches, beside other requests' rows), and the
caller gets its rows joined back in order. If its pieces were padded to
different inner sizes (``pad_variable_length_inputs``), their outputs are
padded the same way to the largest before they are joined; TF Serving fails
such a request with a concat error instead.

A full queue answers UNAVAILABLE, as TF Serving does. Workers are started on
demand and leave when idle, so a version that is unloaded takes its queues with
it.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from functions.serving.codecs.tensors import ALLOWANCE, AMPLIFICATION, element_bytes
from functions.serving.metrics import BATCH_THREAD_POOL, ServingMetrics, microseconds
from loader.errors import ConfigError, InvalidArgument, RollwayError, Unavailable

Arrays = dict[str, npt.NDArray[Any]]
RunFn = Callable[[Arrays], Arrays]
IDLE_SECONDS = 5.0
log = logging.getLogger("rollway.batching")


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's BatchingParameters, with the defaults of TF's
    SharedBatchScheduler::QueueOptions (shared_batch_scheduler.h).

    ``max_execution_batch_size`` None means ``max_batch_size``. (TF Serving's
    GetQueueOptions takes ``max_batch_size().value()``, which is 0, a queue
    that never runs, when the file leaves ``max_batch_size`` unset too.)
    Errors are TF Serving's (AddQueue, WrapSessionForBatching), raised at
    startup as ConfigError.
    """

    max_batch_size: int = 1000
    batch_timeout_seconds: float = 0.0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.max_enqueued_batches == 0 and not self.enable_large_batch_splitting:
            # TF's AddQueue rewrites 0 to 1 here, for old configs that rely on it.
            object.__setattr__(self, "max_enqueued_batches", 1)
        for name, value in (
            ("max_batch_size", self.max_batch_size),
            ("num_batch_threads", self.num_batch_threads),
            ("max_enqueued_batches", self.max_enqueued_batches),
            ("max_execution_batch_size", self.execution_batch_size),
        ):
            if value < 1:
                raise ConfigError(f"BatchingParameters: {name} must be positive; was {value}")
        if self.batch_timeout_seconds < 0:
            raise ConfigError(
                "BatchingParameters: batch_timeout_micros must be non-negative; was "
                f"{round(self.batch_timeout_seconds * 1e6)}"
            )
        if self.enable_large_batch_splitting and self.max_batch_size < self.execution_batch_size:
            raise ConfigError(
                "BatchingParameters: When enable_large_batch_splitting is true, "
                "input_batch_size_limit must be greater than or equal to "
                f"max_execution_batch_size (max_batch_size is {self.max_batch_size}, "
                f"max_execution_batch_size is {self.execution_batch_size})"
            )
        sizes = self.allowed_batch_sizes
        if sizes and list(sizes) != sorted(set(sizes)):
            raise ConfigError(
                "BatchingParameters: allowed_batch_sizes entries must be monotonically "
                f"increasing; got {list(sizes)}"
            )
        if sizes and sizes[-1] != self.max_batch_size:
            # WrapSessionForBatching checks max_batch_size, with or without splitting.
            raise ConfigError(
                "BatchingParameters: Last entry in allowed_batch_sizes must match "
                f"max_batch_size; last entry was {sizes[-1]}; expected {self.max_batch_size}"
            )

    @property
    def execution_batch_size(self) -> int:
        """The most rows one run gets (TF's GetMaxExecutionBatchSize)."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            return self.max_execution_batch_size
        return self.max_batch_size

    @classmethod
    def from_proto(cls, params: Any) -> BatchingOptions:
        def value(name: str, default: Any) -> Any:
            return getattr(params, name).value if params.HasField(name) else default

        splitting = bool(value("enable_large_batch_splitting", False))
        max_execution = value("max_execution_batch_size", None)
        if max_execution is not None and not splitting:
            log.warning(
                "BatchingParameters: max_execution_batch_size has no effect without "
                "enable_large_batch_splitting { value: true }, as in TF Serving"
            )
        return cls(
            max_batch_size=int(value("max_batch_size", cls.max_batch_size)),
            batch_timeout_seconds=int(value("batch_timeout_micros", 0)) / 1e6,
            max_enqueued_batches=int(value("max_enqueued_batches", cls.max_enqueued_batches)),
            num_batch_threads=int(value("num_batch_threads", os.cpu_count() or 1)),
            allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes),
            pad_variable_length_inputs=bool(params.pad_variable_length_inputs),
            enable_large_batch_splitting=splitting,
            max_execution_batch_size=(
                int(max_execution) if splitting and max_execution is not None else None
            ),
        )


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class _Task:
    """``done`` is held until the task has its outputs or error: the caller
    blocks acquiring it (a bare lock costs less than an Event's Condition)."""

    inputs: Arrays
    rows: int
    enqueued: float = field(default_factory=time.monotonic)
    done: threading.Lock = field(default_factory=_held_lock)
    outputs: Arrays | None = None
    error: RollwayError | None = None


@dataclass(eq=False)
class _Queue:
    """The tasks of one batching key, and the workers (up to ``num_batch_threads``,
    started on demand) that run them; ``on_idle`` is called when the last leaves."""

    options: BatchingOptions
    run: RunFn
    on_idle: Callable[[], None]
    metrics: ServingMetrics
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False)
    _tasks: deque[_Task] = field(default_factory=deque, init=False)
    _rows: int = field(default=0, init=False)  # queued rows, of every task
    _workers: int = field(default=0, init=False)

    def submit(self, inputs: Arrays, rows: int) -> list[_Task]:
        """Enqueues one request, as one task or (splitting) as several pieces,
        all or nothing; returns them in row order."""
        o = self.options
        with self._cond:
            if o.enable_large_batch_splitting:
                sizes = self._split_sizes(rows)
            elif self._rows + rows > o.max_enqueued_batches * o.max_batch_size:
                raise Unavailable(
                    "The batch scheduling queue to which this task was submitted is full"
                )
            else:
                sizes = [rows]
            tasks, start = [], 0
            for size in sizes:
                piece = (
                    inputs
                    if size == rows
                    else {k: v[start : start + size] for k, v in inputs.items()}
                )
                tasks.append(_Task(piece, size))
                start += size
            was_empty = not self._tasks
            self._tasks.extend(tasks)
            self._rows += rows
            if self._workers < o.num_batch_threads:
                self._workers += 1
                threading.Thread(target=self._work, name="rollway-batch", daemon=True).start()
            # Wake a worker only when it has something to do: a task for an idle
            # one, or a full batch for one waiting out the timeout. Waking it on
            # every request makes it fight the transport for the GIL.
            if was_empty or self._rows >= o.execution_batch_size:
                self._cond.notify()
            return tasks

    def _split_sizes(self, rows: int) -> list[int]:
        """TF's eager split (Queue::ScheduleWithoutOrEagerSplitImpl with
        SplitInputTask): queued rows form full batches of the execution size
        and one open batch; a request that does not fit the open batch fills
        it, then goes on in pieces of the execution size."""
        o = self.options
        limit = o.execution_batch_size
        batches = max(1, math.ceil(self._rows / limit))  # the open one counts, as in TF
        open_rows = self._rows - (batches - 1) * limit
        capacity = o.max_enqueued_batches * limit - self._rows
        if rows > capacity:
            raise Unavailable(
                "The batch scheduling queue to which this task was submitted is full; task "
                f"size is {rows} but scheduling capacity is only {capacity} "
                f"(num_enqueued_batches={batches}, max_enqueued_batches="
                f"{o.max_enqueued_batches}, open_batch_size={open_rows}, "
                f"max_execution_batch_size={limit})"
            )
        room = limit - open_rows
        if rows <= room:
            return [rows]
        sizes = [room] if room else []
        left = rows - room
        while left > 0:
            sizes.append(min(left, limit))
            left -= sizes[-1]
        return sizes

    def _take(self) -> list[_Task] | None:
        """The next batch, or None when the worker should leave (idle)."""
        o = self.options
        with self._cond:
            while not self._tasks:
                if not self._cond.wait(IDLE_SECONDS) and not self._tasks:
                    self._workers -= 1
                    if self._workers == 0:
                        self.on_idle()
                    return None
            deadline = self._tasks[0].enqueued + o.batch_timeout_seconds
            limit = o.execution_batch_size
            while self._tasks and self._rows < limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, rows = [], 0
            while self._tasks and rows + self._tasks[0].rows <= limit:
                task = self._tasks.popleft()
                batch.append(task)
                rows += task.rows
            self._rows -= rows
            if self._tasks:
                self._cond.notify()  # what is left is another worker's next batch
            now = time.monotonic()
            queuing = self.metrics.batching_queuing_latency.labels(BATCH_THREAD_POOL)
            for task in batch:
                queuing.observe(microseconds(now - task.enqueued))
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
            if self.options.pad_variable_length_inputs:
                inputs = pad_to_common_shape(inputs)
            merged = {name: np.concatenate([i[name] for i in inputs]) for name in inputs[0]}
            if size > total:
                merged = {
                    k: np.concatenate([v, np.repeat(v[:1], size - total, axis=0)])
                    for k, v in merged.items()
                }
            self.metrics.batching_wrapped_run_count.inc()
            outputs = self.run(merged)
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
                task.done.release()

    def _padded_size(self, rows: int) -> int:
        sizes = self.options.allowed_batch_sizes
        if not sizes:
            return rows
        return sizes[bisect.bisect_left(sizes, rows)]


class Batcher:
    """One queue per (signature, input names, dtypes and inner shapes)."""

    def __init__(self, options: BatchingOptions, metrics: ServingMetrics | None = None) -> None:
        self.options = options
        self._metrics = metrics or ServingMetrics()
        self._lock = threading.Lock()
        self._queues: dict[tuple[Any, ...], _Queue] = {}

    def run(
        self, signature_name: str, inputs: Mapping[str, npt.NDArray[Any]], run: RunFn
    ) -> Arrays:
        rows = _batch_rows(inputs)
        if rows > self.options.max_batch_size:
            raise InvalidArgument(
                f"Task size {rows} is larger than maximum input batch size "
                f"{self.options.max_batch_size}"
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
                queue = self._queues[key] = _Queue(
                    self.options, run, lambda: self._forget(key), self._metrics
                )
        tasks = queue.submit(dict(inputs), rows)
        for task in tasks:
            task.done.acquire()
        for task in tasks:
            if task.error is not None:
                raise task.error
        return _join([t.outputs for t in tasks if t.outputs is not None], pad)

    def _forget(self, key: tuple[Any, ...]) -> None:
        with self._lock:
            self._queues.pop(key, None)


def _join(pieces: list[Arrays], pad: bool) -> Arrays:
    """One request's outputs from its pieces' outputs, rows in order."""
    if len(pieces) == 1:
        return pieces[0]
    if pad:
        pieces = pad_to_common_shape(pieces)
    joined = {}
    for name in pieces[0]:
        values = [piece[name] for piece in pieces]
        if len({v.shape[1:] for v in values}) > 1:
            raise InvalidArgument(
                f"Output tensor {name!r} of a split task has different shapes in its pieces "
                f"({', '.join(str(list(v.shape)) for v in values)}); they cannot be concatenated"
            )
        joined[name] = np.concatenate(values)
    return joined


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
    tensor's own first element. Pure; inputs are not modified.

    Padding multiplies: [1, 10000, 1] and [1, 1, 10000] pad to 2 x 10**8
    elements. An input padded past ``AMPLIFICATION`` times its unpadded bytes
    in the batch plus ``ALLOWANCE`` (the request budget's rule, ``codecs.tensors``)
    fails the batch before anything is allocated."""
    padded: list[Arrays] = [{} for _ in tasks]
    for name in tasks[0]:
        values = [task[name] for task in tasks]
        target = np.max([v.shape for v in values], axis=0)
        _check_padded_size(name, values, target)
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


def _check_padded_size(name: str, values: list[npt.NDArray[Any]], target: Any) -> None:
    cost = element_bytes(values[0].dtype)
    inner = math.prod(int(d) for d in target[1:])
    padded = sum(int(v.shape[0]) for v in values) * inner * cost
    unpadded = sum(int(v.size) for v in values) * cost
    limit = AMPLIFICATION * unpadded + ALLOWANCE
    if padded > limit:
        raise InvalidArgument(
            f'Padding input "{name}" of {len(values)} batched tasks to inner shape '
            f"{[int(d) for d in target[1:]]} needs {padded} bytes, more than the {limit}-byte "
            f"limit ({AMPLIFICATION} x their {unpadded} unpadded bytes + "
            f"{ALLOWANCE // 2**20} MiB)"
        )
