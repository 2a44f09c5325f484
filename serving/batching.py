"""Server-side batching: concurrent Predict calls merged into one model call.

Behaviour follows TF Serving's batching session (``tensorflow_serving/batching/batching_session.cc``
and ``tensorflow/core/kernels/batching_util/shared_batch_scheduler.h``):

- calls are queued per signature and per input layout (dtype and non-batch dimensions), so only
  compatible calls are concatenated along dimension 0;
- a batch is run as soon as it holds ``max_batch_size`` rows, or when its oldest call has waited
  ``batch_timeout_micros``, on one of ``num_batch_threads`` threads;
- with ``allowed_batch_sizes`` a batch is padded up to the next allowed size by repeating its first
  row; the padding rows' outputs are dropped;
- every output must be batch-major (dimension 0 = rows); each caller gets its own rows, in order;
- a call with more rows than ``max_batch_size`` is refused (INVALID_ARGUMENT ``Task size N is larger
  than maximum input batch size M``) and a full queue refuses new calls (UNAVAILABLE ``The batch
  scheduling queue to which this task was submitted is full``).
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from serving.calls import PreparedCall
from serving.config import BatchingOptions
from serving.errors import ServingError, invalid_argument

log = logging.getLogger(__name__)

RunFn = Callable[[PreparedCall], dict[str, np.ndarray]]


@dataclass
class _Task:
    call: PreparedCall
    enqueued: float
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


def _queue_key(call: PreparedCall) -> tuple:
    layout = tuple(
        (alias, array.dtype.str, array.shape[1:]) for alias, array in sorted(call.inputs.items())
    )
    return (call.signature_name, call.outputs, layout)


class Batcher:
    """Merges calls to one servable; :meth:`submit` blocks until the caller's rows are computed.

    Args:
        run: runs one (merged) call, e.g. ``Servable.run``.
        options: batching parameters.
        on_batch: called after each model run with (rows run including padding, calls merged).
        on_queue: called with the change in queued rows (+n on submit, -n when a batch is taken).
    """

    def __init__(
        self,
        run: RunFn,
        options: BatchingOptions,
        on_batch: Callable[[int, int], None] | None = None,
        on_queue: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self._options = options
        self._on_batch = on_batch
        self._on_queue = on_queue or (lambda _delta: None)
        self._queues: dict[tuple, list[_Task]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"batch-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, call: PreparedCall) -> dict[str, np.ndarray]:
        """Queue a call and wait for its outputs.

        Args:
            call: a checked call with at least one input of rank >= 1.

        Returns:
            output alias -> this call's rows.

        Raises:
            ServingError: INVALID_ARGUMENT (scalar input, too many rows), UNAVAILABLE (queue
                full), or the error of the merged model run.
        """
        rows = self._rows(call)
        limit = self._options.max_batch_size
        if rows > limit:
            raise invalid_argument(
                f"Task size {rows} is larger than maximum input batch size {limit}"
            )
        task = _Task(call, time.monotonic())
        with self._cond:
            if self._closed:
                closed = True
            else:
                closed = False
                queue = self._queues.setdefault(_queue_key(call), [])
                queued_rows = sum(self._rows(t.call) for t in queue) + rows
                if math.ceil(queued_rows / limit) > self._options.max_enqueued_batches:
                    raise ServingError(
                        grpc.StatusCode.UNAVAILABLE,
                        "The batch scheduling queue to which this task was submitted is full",
                    )
                queue.append(task)
                self._on_queue(rows)
                self._cond.notify()
        if closed:  # the servable is being unloaded: run this straggler alone
            return self._run(call)
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def close(self) -> None:
        """Stop the threads once every queued call has run (calls submitted later run alone)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @staticmethod
    def _rows(call: PreparedCall) -> int:
        arrays = list(call.inputs.values())
        if not arrays or any(a.ndim == 0 for a in arrays):
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        sizes = {int(a.shape[0]) for a in arrays}
        if len(sizes) != 1:
            raise invalid_argument(
                "Batching Run() input tensors must have equal 0th-dimension size"
            )
        return sizes.pop()

    def _take_batch(self) -> list[_Task] | None:
        """Wait for a ready batch (under the lock); None when closed and drained."""
        timeout = self._options.batch_timeout_micros / 1e6
        limit = self._options.max_batch_size
        with self._cond:
            while True:
                now = time.monotonic()
                wait = None
                for key, queue in self._queues.items():
                    if not queue:
                        continue
                    rows = sum(self._rows(t.call) for t in queue)
                    due = queue[0].enqueued + timeout
                    if rows >= limit or now >= due or self._closed:
                        batch: list[_Task] = []
                        taken = 0
                        while queue and taken + self._rows(queue[0].call) <= limit:
                            taken += self._rows(queue[0].call)
                            batch.append(queue.pop(0))
                        if not queue:
                            del self._queues[key]
                        self._on_queue(-taken)
                        return batch
                    wait = due - now if wait is None else min(wait, due - now)
                if self._closed:
                    return None
                self._cond.wait(wait)

    def _worker(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._process(batch)

    def _process(self, batch: list[_Task]) -> None:
        sizes = [self._rows(t.call) for t in batch]
        total = sum(sizes)
        padded = total
        allowed = self._options.allowed_batch_sizes
        if allowed:
            padded = allowed[bisect.bisect_left(allowed, total)]
        first = batch[0].call
        inputs = {}
        for alias in first.inputs:
            parts = [t.call.inputs[alias] for t in batch]
            if padded > total:
                pad = np.repeat(parts[0][:1], padded - total, axis=0)
                parts.append(pad)
            inputs[alias] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        merged = PreparedCall(first.signature_name, inputs, first.outputs)
        try:
            outputs = self._run(merged)
            for alias, array in outputs.items():
                if array.ndim == 0 or array.shape[0] != padded:
                    raise ServingError(
                        grpc.StatusCode.INTERNAL,
                        f"output '{alias}' has shape {list(array.shape)}: batching needs "
                        f"dimension 0 = {padded} (batch-major outputs)",
                    )
            start = 0
            for task, size in zip(batch, sizes, strict=True):
                task.result = {a: o[start : start + size] for a, o in outputs.items()}
                start += size
        except BaseException as exc:  # every caller of the batch gets the error
            for task in batch:
                task.error = exc
        finally:
            for task in batch:
                task.done.set()
        if self._on_batch is not None:
            self._on_batch(padded, len(batch))
