"""Several JAX processes running one program: one writer, bounded waits.

After `keras.distribution.initialize(...)` every process runs the same
script (SPMD). Files must then be written by one process only, process 0
(the writer), while the others wait for it and read what it wrote.
`WriterSync` does that through JAX's coordination service (the key-value
store and barriers that `jax.distributed` starts): the writer runs a step
and publishes its outcome (a small JSON value, or the error it raised);
every other process waits for that outcome, bounded by a timeout, and
returns the same value or raises the same kind of error. No device
collective is involved, so waiting does not depend on XLA's own
rendezvous, and a writer that fails ends every process with its message
instead of leaving them waiting.

With one process (no `keras.distribution.initialize`, or a backend other
than JAX) a `WriterSync` runs each step in place and waits for nothing.

The timeout (seconds) is `KERAS_LOTTERY_SYNC_TIMEOUT`, 1800 by default:
long enough for the writer to save a round of a large model, short enough
that a lost writer does not hang a job for ever.

Example:

>>> from keras_lottery._internal.processes import WriterSync
>>> sync = WriterSync("doc")
>>> sync.writer, sync.on_writer("step", lambda: {"resume": False})
(True, {'resume': False})
"""

from __future__ import annotations

import builtins
import itertools
import json
import os
import sys
from collections.abc import Callable

from keras_lottery.errors import KerasLotteryError

#: Seconds a process waits for the writer (environment variable).
TIMEOUT_ENV = "KERAS_LOTTERY_SYNC_TIMEOUT"
DEFAULT_TIMEOUT = 1800.0
# Errors raised again on the other processes with their own type.
_SAME_TYPE = ("ValueError", "TypeError", "OSError", "FileNotFoundError",
              "PermissionError", "FileExistsError", "IsADirectoryError",
              "NotADirectoryError")
_CALLS = itertools.count()  # the same sequence on every process (SPMD)


class WriterError(KerasLotteryError, RuntimeError):
    """The writer (process 0) failed, or did not answer in time."""


def _state():
    """JAX's distributed state when this process is one of several, else
    None. Imports nothing: a program that never imported JAX has one
    process."""
    distributed = sys.modules.get("jax._src.distributed")
    state = getattr(distributed, "global_state", None)
    if state is None or state.client is None or (state.num_processes or 1) < 2:
        return None
    return state


def process_count() -> int:
    """The number of JAX processes of this program (1 without
    `keras.distribution.initialize`)."""
    state = _state()
    return 1 if state is None else int(state.num_processes)


def process_index() -> int:
    """This process's index (0, the writer, with one process)."""
    state = _state()
    return 0 if state is None else int(state.process_id)


def split_across_processes(value) -> bool:
    """Whether `value` (a tensor or variable) is a JAX array that no process
    holds whole: neither fully addressable nor replicated."""
    array = getattr(value, "value", value)
    return not (getattr(array, "is_fully_addressable", True)
                or getattr(array, "is_fully_replicated", False))


def timeout_seconds() -> float:
    """The wait for the writer, from `KERAS_LOTTERY_SYNC_TIMEOUT`."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(
            f"{TIMEOUT_ENV} must be a number of seconds > 0. Received: "
            f"{TIMEOUT_ENV}={raw!r}"
        )
    return seconds


class WriterSync:
    """Runs steps on the writer (process 0); the others wait for the
    outcome (see the module docstring).

    Args:
        what: Who writes, for keys and messages, e.g. `"lottery_search"`.
            Every process must create its `WriterSync`s in the same order.
    """

    def __init__(self, what: str):
        self.what = what
        self.count, self.index = process_count(), process_index()
        self.writer = self.index == 0
        self.prefix = f"keras_lottery/{what}/{next(_CALLS)}"
        self.timeout = timeout_seconds() if self.count > 1 else None
        self._steps = itertools.count()

    def _key(self, step: str) -> str:
        return f"{self.prefix}/{next(self._steps)}/{step}"

    def _fail(self, step: str, error: BaseException | str) -> WriterError:
        return WriterError(
            f"{self.what}: process {self.index} of {self.count} waited for "
            f"process 0 (the writer) at step {step!r}: {error}. Process 0 "
            "stopped or is slower than the timeout; raise "
            f"{TIMEOUT_ENV} (now {self.timeout:g} s) if it was still working."
        )

    def on_writer(self, step: str, fn: Callable[[], object]):
        """`fn()` on the writer, whose result (JSON-serializable) every
        process returns; an error of the writer is raised on every process
        (the same built-in type where it is one, else `WriterError`)."""
        if self.count == 1:
            return fn()
        key = self._key(step)
        client = _state().client
        if self.writer:
            try:
                value = fn()
            except Exception as error:
                client.key_value_set(key, json.dumps(
                    {"error": type(error).__name__, "message": str(error)}))
                raise
            client.key_value_set(key, json.dumps({"value": value}))
            return value
        try:
            raw = client.blocking_key_value_get(key, int(self.timeout * 1000))
        except Exception as error:  # the service's timeout or shutdown
            raise self._fail(step, error) from None
        outcome = json.loads(raw)
        if "error" not in outcome:
            return outcome["value"]
        name, message = outcome["error"], outcome["message"]
        if name in _SAME_TYPE:
            raise getattr(builtins, name)(message)
        raise WriterError(
            f"{self.what}: process 0 (the writer) failed at step {step!r}: "
            f"{name}: {message}"
        )

    def barrier(self, step: str) -> None:
        """Every process waits here for all the others (bounded)."""
        if self.count == 1:
            return
        key = self._key(step)
        try:
            _state().client.wait_at_barrier(key, int(self.timeout * 1000))
        except Exception as error:
            raise WriterError(
                f"{self.what}: process {self.index} of {self.count} waited "
                f"for the other processes at step {step!r}: {error}. One of "
                f"them stopped or is slower than {TIMEOUT_ENV} "
                f"({self.timeout:g} s)."
            ) from None


__all__ = ["TIMEOUT_ENV", "WriterError", "WriterSync", "process_count",
           "process_index", "split_across_processes", "timeout_seconds"]
