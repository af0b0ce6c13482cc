"""`benchmark_tflite`: median invoke latency with and without XNNPACK."""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_lottery.deploy.tflite.interpreter import load
from keras_lottery.deploy.tflite.paths import check_path


@dataclasses.dataclass(frozen=True)
class Latency:
    """Median latency of one `.tflite` model at one batch size.

    Attributes:
        batch_size: Rows per invoke.
        xnnpack_ms: Median milliseconds per invoke with the default
            delegates (XNNPACK); None if the model does not load that way.
        builtin_ms: Median milliseconds per invoke on the builtin kernels.

    Example:

    >>> from keras_lottery.deploy.tflite.benchmark import Latency
    >>> Latency(1, 0.5, 1.0).speedup
    2.0
    """

    batch_size: int
    xnnpack_ms: float | None
    builtin_ms: float

    @property
    def speedup(self) -> float | None:
        """`builtin_ms / xnnpack_ms`, or None."""
        return None if not self.xnnpack_ms else self.builtin_ms / self.xnnpack_ms


def _time_invoke(content: bytes, batch: int, *, xnnpack: bool, threads: int,
                 runs: int, warmup: int) -> float:
    interpreter = load(content, xnnpack=xnnpack, threads=threads)
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        shape = [batch, *[max(int(s), 1) for s in detail["shape_signature"][1:]]]
        interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        value = rng.standard_normal(detail["shape"]).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def benchmark_tflite(
    path: str | os.PathLike,
    batch_sizes: Sequence[int] = (1, 32),
    threads: int = 1,
    *,
    runs: int = 50,
    warmup: int = 5,
) -> list[Latency]:
    """Median invoke latency with and without XNNPACK, per batch size.

    The input's batch dimension is resized to each batch size; inputs are
    random normal. Each figure is the median of `runs` timed invokes
    after `warmup` untimed ones, in this process.

    Args:
        path: A `.tflite` file.
        batch_sizes: Batch sizes to time.
        threads: Interpreter threads.
        runs: Timed invokes per figure.
        warmup: Untimed invokes first.

    Returns:
        One `Latency` per batch size.

    Example:

    >>> import keras_lottery as kl
    >>> for row in kl.benchmark_tflite("m.tflite"):  # doctest: +SKIP
    ...     print(row.batch_size, row.xnnpack_ms, row.builtin_ms)
    """
    path = check_path(path, must_exist=True)
    sizes = [batch_sizes] if isinstance(batch_sizes, int) else list(batch_sizes)
    if not sizes or any(not isinstance(b, int) or b < 1 for b in sizes):
        raise ValueError(f"`batch_sizes` must be positive integers. "
                         f"Received: batch_sizes={batch_sizes!r}.")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"`threads` must be a positive integer. Received: "
                         f"threads={threads!r}.")
    content = Path(path).read_bytes()
    results = []
    for batch in sizes:
        builtin = _time_invoke(content, batch, xnnpack=False, threads=threads,
                               runs=runs, warmup=warmup)
        try:
            xnn = _time_invoke(content, batch, xnnpack=True, threads=threads,
                               runs=runs, warmup=warmup)
        except (RuntimeError, ValueError):
            xnn = None
        results.append(Latency(batch, xnn, builtin))
    return results


__all__ = ["Latency", "benchmark_tflite"]
