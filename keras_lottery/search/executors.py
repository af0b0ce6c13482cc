"""Where `run_trials` runs its trials: local processes, or Ray tasks.

`run_trials(..., executor="ray")` runs each trial as a task on the Ray
cluster this process is connected to (`ray.init(address=...)` before the
call; without it Ray starts a local cluster). Each task runs in a fresh
worker process (`max_calls=1`: no backend state is shared between trials)
with the resources the trial asks for (`num_cpus`, `num_gpus`, `memory`).
A worker that dies (killed, out of memory, its node lost) makes Ray run the
task again, up to `retries` times; the trial's search directory, on storage
every node can read and write, then resumes after its last finished round.
An exception raised by the trial itself is not retried: it is reported by
seed, as the local executor does.

Ray is an optional dependency (`pip install "keras-lottery[ray]"`),
imported only here and only when `executor="ray"` is used.
"""

from __future__ import annotations

import os
import pickle
import runpy
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

EXECUTORS = ("local", "ray")
#: The per-trial resources Ray is asked for.
RESOURCE_NAMES = ("num_cpus", "num_gpus", "memory")


def check_executor(executor, resources, retries, timeout) -> dict:
    """Checks the executor arguments; returns the resources as a dict."""
    if executor not in EXECUTORS:
        raise ValueError(
            f"`executor` must be one of {EXECUTORS}. Received: "
            f"executor={executor!r}"
        )
    if resources is not None and executor != "ray":
        raise ValueError(
            "`resources` applies to executor='ray' only. Received: "
            f"resources={resources!r} with executor={executor!r}"
        )
    if executor == "ray" and timeout is not None:
        raise ValueError(
            "`timeout` applies to the local executor only; on Ray, stop a "
            "trial with `ray.cancel` or the cluster's own limits. Received: "
            f"timeout={timeout!r} with executor='ray'"
        )
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(
            f"`retries` must be an int >= 0. Received: retries={retries!r}"
        )
    resources = dict(resources or {})
    for name, value in resources.items():
        if name not in RESOURCE_NAMES:
            raise ValueError(
                f"Unknown trial resource {name!r}; use {RESOURCE_NAMES}. "
                f"Received: resources={resources!r}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            value < 0
        ):
            raise ValueError(
                f"Trial resource {name!r} must be a number >= 0. Received: "
                f"{name}={value!r}"
            )
    return resources


def import_ray():
    """The `ray` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "executor='ray' needs Ray, which is not installed. Install it with "
            "`pip install \"keras-lottery[ray]\"` (or `pip install ray`), or "
            "use the default executor='local'."
        ) from error
    return ray


def run_trial(trial, args: Sequence[str], seed: int, directory: str) -> None:
    """One trial, in this process: the body of a Ray task.

    A script runs as `__main__` in this (fresh) worker process rather than
    in a child of it, so a worker that is killed leaves no orphan still
    writing the search directory while the retry runs.
    """
    try:
        _run(trial, args, seed, directory)
    except Exception as error:
        raise _portable(error) from None


def _portable(error: Exception) -> Exception:
    """`error`, or a RuntimeError with its type and message where it does
    not survive pickling (a `SearchError` carries its model), so the driver
    can report it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _run(trial, args: Sequence[str], seed: int, directory: str) -> None:
    if callable(trial):
        trial(seed, Path(directory))
        return
    argv = sys.argv
    sys.argv = [os.fspath(trial), *map(str, args), "--seed", str(seed),
                "--directory", directory]
    try:
        runpy.run_path(os.fspath(trial), run_name="__main__")
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            raise RuntimeError(
                f"`python {' '.join(sys.argv)}` exited with {exit_.code!r}"
            ) from None
    finally:
        sys.argv = argv


def _cause(error: BaseException) -> BaseException:
    """The trial's own exception inside Ray's wrapper, when there is one."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def run_on_ray(
    trial,
    args: Sequence[str],
    paths: Mapping[int, Path],
    *,
    processes: int | None,
    resources: Mapping[str, float],
    retries: int,
    env: Mapping[str, str] | None,
    on_tick: Callable[[], None],
    on_done: Callable[[int, BaseException | None], None],
) -> None:
    """Runs one Ray task per seed; reports each end through `on_done`.

    At most `processes` tasks are submitted at once (all when None: Ray
    then schedules them by their resources). `on_tick` is called about
    once a second while tasks run.
    """
    ray = import_ray()
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS, or a new local cluster
    options = {"max_retries": retries, "retry_exceptions": False, **resources}
    if env:
        options["runtime_env"] = {
            "env_vars": {str(k): str(v) for k, v in env.items()}
        }
    task = ray.remote(max_calls=1)(run_trial).options(**options)
    waiting = list(paths)
    running: dict = {}
    while waiting or running:
        while waiting and (processes is None or len(running) < processes):
            seed = waiting.pop(0)
            ref = task.remote(trial, list(args), seed, os.fspath(paths[seed]))
            running[ref] = seed
        ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
        on_tick()
        for ref in ready:
            seed = running.pop(ref)
            try:
                ray.get(ref)
            except Exception as error:  # reported by seed, not raised here
                on_done(seed, _cause(error))
            else:
                on_done(seed, None)
