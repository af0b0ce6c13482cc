"""Wall time of the engines: run_trials locally vs on Ray, and one search on
two JAX processes vs one process with 4 devices.

Trials: 4 seeds x 3 rounds of LeNet-300-100 (MNIST, batch 60, Adam 1.2e-3,
`--iterations` steps per round), one after another in this process (the
plain run), with the local executor (2 processes) and with Ray (a local
cluster of 2 CPUs, 2 workers). JAX: a 3-round search of the same model
under `DataParallel` over 4 CPU devices, in one process and split over two
processes (2 devices each, gloo collectives), with each process's peak
resident memory and the bytes of what it holds.

    nice python benchmarks/engines.py         # benchmarks/results/engines.json
    nice python benchmarks/engines.py --docs  # and docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, load_flat_mnist, write_docs_section

SEEDS = [0, 1, 2, 3]
ROUNDS = 3
BATCH = 60


def _lenet(seed: int):
    import keras

    import keras_lottery as kl

    keras.utils.set_random_seed(seed)
    model = kl.wrap(keras.Sequential([
        keras.Input((784,)), keras.layers.Dense(300, "relu"),
        keras.layers.Dense(100, "relu"), keras.layers.Dense(10),
    ]))
    model.compile(keras.optimizers.Adam(1.2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def trial(seed: int, directory: Path) -> None:
    """One search: ROUNDS rounds of `ITERATIONS` steps."""
    import keras_lottery as kl

    iterations = int(os.environ.get("ENGINES_ITERATIONS", "200"))
    x, y, _ = load_flat_mnist(iterations * BATCH)
    kl.lottery_search(
        _lenet(seed),
        lambda m: m.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False,
                        verbose=0),
        rounds=ROUNDS, seed=seed, directory=directory, verbose=0,
    )


def measure_trials() -> dict:
    from keras_lottery.search.trials import run_trials

    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for seed in SEEDS:
            trial(seed, Path(tmp) / "plain" / f"seed_{seed}")
        times["plain (one process, in turn)"] = time.perf_counter() - start
        start = time.perf_counter()
        run_trials(trial, SEEDS, Path(tmp) / "local", processes=2)
        times["local executor, 2 processes"] = time.perf_counter() - start
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                     p for p in sys.path if p)}})
        started = time.perf_counter() - start
        run_trials(trial, SEEDS, Path(tmp) / "ray", executor="ray",
                   resources={"num_cpus": 1})
        times["Ray, 2 workers"] = time.perf_counter() - start
        times["Ray cluster start (included above)"] = started
        ray.shutdown()
    return times


# ----------------------------------------------------------- JAX processes
def jax_worker(process_id: int, processes: int, port: int, out: Path) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras
    import numpy as np

    import keras_lottery as kl

    if processes > 1:
        keras.distribution.initialize(
            job_addresses=f"127.0.0.1:{port}", num_processes=processes,
            process_id=process_id,
        )
    devices = keras.distribution.list_devices()
    iterations = int(os.environ.get("ENGINES_ITERATIONS", "200"))
    x, y, _ = load_flat_mnist(iterations * BATCH)
    per = BATCH // processes  # this process's rows of each global batch
    x = x.reshape(-1, processes, per, 784)[:, process_id].reshape(-1, 784)
    y = y.reshape(-1, processes, per)[:, process_id].reshape(-1)
    distribution = keras.distribution.DataParallel(
        devices=devices, auto_shard_dataset=processes == 1
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    class InOrder(keras.callbacks.Callback):
        """Not async-safe: Keras then reads each batch's logs in the main
        thread. Its reader threads stalled a 2-process run (all of them in
        convert_to_numpy, the main thread waiting; 200 steps of 30 rows)."""

        def on_train_batch_end(self, batch, logs=None):
            pass

    with distribution.scope():
        model = _lenet(0)
        start = time.perf_counter()
        kl.lottery_search(
            model,
            lambda m: m.fit(x, y, batch_size=per, epochs=1, shuffle=False,
                            verbose=0, callbacks=[InOrder()]),
            rounds=ROUNDS, seed=0, verbose=0,
            directory=out / "search",  # every process; process 0 writes
        )
        wall = time.perf_counter() - start
    held = {"weights": 0, "masks": 0, "rewind point": 0, "optimizer slots": 0}
    for v in model.weights:
        size = int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
        kind = ("masks" if "mask" in v.path else "rewind point"
                if "initial" in v.path else "weights")
        held[kind] += size
    held["optimizer slots"] = sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
        for v in model.optimizer.variables
    )
    (out / f"process_{process_id}.json").write_text(json.dumps({
        "seconds": wall, "devices": len(devices),
        "local_devices": jax.local_device_count(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_before_search_mib": before,
        "bytes_held": held,
    }))
    sys.stdout.flush()
    os._exit(0)  # no wait in JAX's shutdown barrier


def measure_jax(processes: int) -> dict:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    local = 4 // processes
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={local}"}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        procs = [subprocess.Popen(
            [sys.executable, __file__, "--jax-worker", str(i), str(processes),
             str(port), tmp], env=env) for i in range(processes)]
        codes = [p.wait(timeout=900) for p in procs]
        total = time.perf_counter() - start
        if any(codes):
            raise RuntimeError(f"JAX workers failed: statuses {codes}")
        reports = [json.loads((Path(tmp) / f"process_{i}.json").read_text())
                   for i in range(processes)]
    return {"processes": processes, "wall_with_startup": total,
            "reports": reports}


JAX_MISSING = """
The one-process, 4-device JAX run was not measured: on this shared machine
(load average 12 to 20 on 2 cores, in each attempt) it aborted in XLA's CPU
all-reduce ("Termination timeout for `all reduce` ... of 40 seconds
exceeded ... Expected 4 threads to join the rendezvous, but only 3 of them
arrived on time"). Rerun `nice python benchmarks/engines.py --part jax
--docs` on a quiet machine; `--part jax2` measures the 2-process run alone.
"""


def _jax_row(run: dict) -> str:
    n = run["processes"]
    name = f"{n} process{'es' if n > 1 else ''} x {4 // n} devices"
    if "error" in run:
        return f"| {name} | failed: {run['error'][:160]} | | |"
    reports = run["reports"]
    rss = ", ".join(f"{p.get('peak_rss_before_search_mib', float('nan')):.0f}"
                    f" -> {p['peak_rss_mib']:.0f}" for p in reports)
    return (f"| {name} | {max(p['seconds'] for p in reports):.1f} | "
            f"{run['wall_with_startup']:.1f} | {rss} |")


def measure_jax_or_error(processes: int) -> dict:
    """`measure_jax`, or the error that ended it (kept in the table)."""
    try:
        return measure_jax(processes)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        return {"processes": processes, "error": str(error)}


def docs_body(entry: dict) -> str:
    t, j = entry["trials"], entry.get("jax")
    plain = t["plain (one process, in turn)"]
    rows = "\n".join(
        f"| {name} | {seconds:.1f} | {seconds / plain:.2f}x |"
        for name, seconds in t.items() if "included" not in name
    )
    jax_rows = "" if not j else "\n".join(_jax_row(j[k]) for k in ("1", "2")
                                          if k in j)
    head = f"""## Engines: Ray and several JAX processes

`nice python benchmarks/engines.py --docs` (JAX backend; {entry['machine']}).
{len(SEEDS)} trials x {ROUNDS} rounds of LeNet-300-100 on MNIST
({entry['iterations']} iterations of batch {BATCH} per round, Adam 1.2e-3):

| Engine | Wall time (s) | vs plain |
| --- | --- | --- |
{rows}

(Ray's time includes starting its local cluster:
{t['Ray cluster start (included above)']:.1f} s.) Each trial of the local executor and
of Ray starts a fresh process that imports Keras and the backend; with
{entry['machine']} shared with other jobs, that start-up and the
contention, not the engine, make most of the difference, and two workers
cannot beat one process in turn (there is no idle core). Measured once:
the order of the two engines may change from run to run.
"""
    if not j:
        return head + JAX_MISSING
    if "1" not in j or "error" in j["1"]:
        head += JAX_MISSING
    held = next(r for r in j.values() if "reports" in r)["reports"][0][
        "bytes_held"]
    return head + f"""
One {ROUNDS}-round search of the same model, `DataParallel` over 4 CPU
devices (global batch {BATCH}), the search directory passed on every
process (process 0 writes it); `nice python benchmarks/engines.py --part
jax2 --docs`, {entry.get('jax_date', 'date not recorded')}:

| Run | Search (s) | With start (s) | Peak RSS per process (MiB): before -> after |
| --- | --- | --- | --- |
{jax_rows}

Each process holds {_held_text(held)}: 17 bytes per weight, the formula of
[Scaling up](guides/scaling-up.md#memory-at-scale). The resident memory
that the search adds to a process (the arrow) is mostly XLA's compiled
steps and buffers, not the model: LeNet-300-100 is too small to show the
formula in a process's peak RSS, and no larger model was measured here.

Figures from `benchmarks/results/engines.json`, measured on a shared
machine (other jobs running): compare rows of one table, not across runs.
"""


def _held_text(held: dict) -> str:
    parts = ", ".join(f"{k} {v:,} B" for k, v in held.items())
    return f"{parts} ({sum(held.values()) / 1e6:.2f} MB in all)"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--docs", action="store_true")
    parser.add_argument("--part", choices=["all", "trials", "jax", "jax2", "none"],
                        default="all", help="jax2: the 2-process JAX run only; "
                        "none: rewrite the docs from the saved results")
    parser.add_argument("--jax-worker", nargs=4)
    args = parser.parse_args(argv)
    os.environ["ENGINES_ITERATIONS"] = str(args.iterations)
    if args.jax_worker:
        i, n, port, out = args.jax_worker
        jax_worker(int(i), int(n), int(port), Path(out))
        return
    path = RESULTS / "engines.json"
    entry = json.loads(path.read_text()) if path.is_file() else {}
    entry.update(iterations=args.iterations, machine=f"{os.cpu_count()} CPU cores")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "trials"):
        entry["trials"] = measure_trials()
        path.write_text(json.dumps(entry, indent=1))  # kept if JAX fails
    if args.part in ("all", "jax"):
        entry["jax"] = {"1": measure_jax_or_error(1), "2": measure_jax_or_error(2)}
    if args.part == "jax2":
        entry["jax"] = {"2": measure_jax_or_error(2)}
    if args.part in ("all", "jax", "jax2"):
        entry["jax_date"] = time.strftime("%Y-%m-%d")
        path.write_text(json.dumps(entry, indent=1))
    print(json.dumps(entry, indent=1))
    if args.docs:
        write_docs_section("engines", docs_body(entry))

if __name__ == "__main__":
    main()
