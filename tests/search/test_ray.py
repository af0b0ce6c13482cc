"""run_trials(..., executor="ray") on a local Ray cluster.

The trials are the local executor's, run as Ray tasks: the results must be
the local executor's, a trial whose worker is SIGKILLed mid-round is
retried and resumes from its search directory, and a trial that raises is
reported by seed while the others finish.

One backend only (JAX): the executor is backend-independent code (Ray runs
a function in a fresh worker process, which imports whatever backend
KERAS_BACKEND names, exactly as a local trial process does), and each trial
process pays a backend start-up; running the same checks under TensorFlow
and torch would triple the time and test nothing new. Skipped when Ray is
not installed (`pip install "keras-lottery[ray]"`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from harness import tiny_search

import keras_lottery as kl
from keras_lottery.search.merge import merge_results
from keras_lottery.search.trials import run_trials

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install 'keras-lottery[ray]'"
)
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="The Ray executor is backend-independent; its tests run under JAX "
    "only, to keep the suite fast (see the module docstring).",
)

SEEDS = [0, 1, 2]
KILLED = 1  # this seed's worker is SIGKILLed in round 1, on its first attempt
FAILING = 5


def _attempt(control: Path, seed: int) -> int:
    """Counts this seed's attempts (one line per started trial)."""
    log = control / f"{seed}.attempts"
    with log.open("a") as f:
        f.write(f"{os.getpid()}\n")
    return len(log.read_text().split())


def _trial(seed: int, directory: Path) -> None:
    """The suite's tiny 2-round search, with hooks for the fault tests."""
    control = directory.parent / "control"
    attempt = _attempt(control, seed) if control.is_dir() else 1
    fits = []

    def before_fit():
        fits.append(attempt)
        if seed == FAILING:
            raise ValueError(f"no data for seed {seed}")
        if control.is_dir() and seed == KILLED and attempt == 1 and len(fits) == 2:
            # Mid-round 1: tell the test who to kill, and wait for it.
            (control / "kill.pid").write_text(str(os.getpid()))
            time.sleep(120)

    tiny_search(seed, directory, before_fit)
    if control.is_dir():
        (control / f"{seed}.fits").write_text(f"{attempt} {len(fits)}")


@pytest.fixture(scope="module")
def cluster():
    here = str(Path(__file__).parent)
    # The workers import this module (the trial function) by name.
    path = os.pathsep.join([here, *(p for p in sys.path if p)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def _kill_when_asked(control: Path, killed: list, stop: threading.Event):
    while not stop.is_set():
        pid_file = control / "kill.pid"
        if pid_file.is_file() and pid_file.read_text():
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.1)


def test_ray_survives_a_killed_worker_and_reports_a_failing_trial(
    cluster, tmp_path, capsys
):
    """One run (worker start-ups are the cost): seed 1's worker is killed
    mid-round, seed 5 raises, seeds 0 and 2 run undisturbed."""
    control = tmp_path / "ray" / "control"
    control.mkdir(parents=True)
    killed: list = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_when_asked,
                              args=(control, killed, stop), daemon=True)
    killer.start()
    try:
        with pytest.raises(RuntimeError) as info:
            run_trials(_trial, [*SEEDS, FAILING], tmp_path / "ray",
                       executor="ray", resources={"num_cpus": 1}, verbose=1)
    finally:
        stop.set()
    # The failing trial is reported by seed; the others finished.
    message = str(info.value)
    assert "1 of 4 trials failed" in message
    assert f"seed {FAILING}: RuntimeError: SearchError: lottery_search failed " \
        f"in round 0 (fit_fn): ValueError: no data for seed {FAILING}" in message
    on_ray = [kl.SearchResult.load(tmp_path / "ray" / f"seed_{seed}")
              for seed in SEEDS]

    # The killed worker was retried, and the retry resumed after round 0:
    # it trained rounds 1 and 2 (2 fits), not all 3 rounds again.
    assert len(killed) == 1
    pids = (control / f"{KILLED}.attempts").read_text().split()
    assert len(pids) == 2 and int(pids[0]) == killed[0]
    assert (control / f"{KILLED}.fits").read_text() == "2 2"
    assert (control / "0.fits").read_text() == "1 3"  # undisturbed: 3 fits

    # The results are the local executor's, which are those of the trial
    # run here (test_trials checks that): no process start-up needed.
    for seed in SEEDS:
        _trial(seed, tmp_path / "local" / f"seed_{seed}")
    local = [kl.SearchResult.load(tmp_path / "local" / f"seed_{seed}")
             for seed in SEEDS]
    for a, b in zip(on_ray, local):
        assert a.args["seed"] == b.args["seed"]
        assert len(a) == len(b) == 3
        for r in range(3):
            masks = b.masks(r)
            assert a.masks(r).keys() == masks.keys()
            for key, mask in masks.items():
                np.testing.assert_array_equal(a.masks(r)[key], mask)
            assert a[r].metrics["loss"] == pytest.approx(
                b[r].metrics["loss"], rel=1e-6
            )
    def rows(results):  # all but the wall times
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in merge_results(results).rows()]

    assert rows(on_ray) == rows(local)
    out = capsys.readouterr().out
    for seed in SEEDS:
        for r in range(3):
            assert f"run_trials: seed {seed}: round {r} finished" in out
        assert f"run_trials: seed {seed}: done" in out
    assert f"run_trials: seed {FAILING}: failed (RuntimeError: " in out


def test_ray_script_trial(cluster, tmp_path):
    script = tmp_path / "trial.py"
    script.write_text(
        "import argparse, sys\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('--seed', type=int)\n"
        "parser.add_argument('--directory')\n"
        "args = parser.parse_args()\n"
        "sys.exit(f'no data for seed {args.seed}')\n"
    )
    with pytest.raises(RuntimeError, match=r"seed 4: RuntimeError: .*no data for"):
        run_trials(script, [4], tmp_path / "runs", executor="ray")


def test_ray_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="executor"):
        run_trials(_trial, [0], tmp_path, executor="dask")
    with pytest.raises(ValueError, match="Unknown trial resource 'gpus'"):
        run_trials(_trial, [0], tmp_path, executor="ray", resources={"gpus": 1})
    with pytest.raises(ValueError, match="executor='ray' only"):
        run_trials(_trial, [0], tmp_path, resources={"num_cpus": 1})
    with pytest.raises(ValueError, match="local executor only"):
        run_trials(_trial, [0], tmp_path, executor="ray", timeout=5)
    with pytest.raises(ValueError, match="retries"):
        run_trials(_trial, [0], tmp_path, executor="ray", retries=-1)
