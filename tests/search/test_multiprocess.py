"""One search on two JAX processes (multi-host, on one machine).

The test launches this file twice on 127.0.0.1 (`keras.distribution.
initialize`, 2 processes x 2 CPU devices, JAX's gloo CPU collectives) and
runs a 2-round `lottery_search` under `DataParallel` across the 4 devices;
each process feeds its half of every global batch. Every process also runs
the same search on one device in the same process, with the whole batch:
the reference. The masks must be the reference's on both processes, and
only process 0 writes the search directory. A failure in one process ends
both (no hang: the launcher has a bounded timeout).

JAX only: `keras.distribution` is implemented on JAX alone.

Run by hand: `python tests/search/test_multiprocess.py OUT_DIR` launches
both processes (see `launch`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROCESSES = 2
LOCAL_DEVICES = 2
BATCH = 16  # global; each process feeds BATCH // PROCESSES rows of it
TIMEOUT = 240


# ------------------------------------------------------------------ worker
def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.integers(0, 4, size=64).astype("int32")
    return x, y


def _local_share(array, process_id):
    """This process's rows of every global batch, in order."""
    per = BATCH // PROCESSES
    batches = array.reshape(-1, PROCESSES, per, *array.shape[1:])
    return batches[:, process_id].reshape(-1, *array.shape[1:])


def _model():
    import keras

    import keras_lottery as kl

    rng = np.random.default_rng(1)
    shapes = [(8, 32), (32,), (32, 4), (4,)]
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(32, activation="relu", name="dense"),
        keras.layers.Dense(4, name="dense_1"),
    ])
    model.set_weights([rng.normal(scale=0.3, size=s).astype("float32")
                       for s in shapes])
    model = kl.wrap(model)
    model.compile(keras.optimizers.SGD(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _search(model, x, y, batch, directory):
    import keras_lottery as kl

    return kl.lottery_search(
        model,
        lambda m: m.fit(x, y, batch_size=batch, epochs=2, shuffle=False,
                        verbose=0),
        rounds=2, rate=0.5, seed=0, directory=directory, verbose=0,
    )


def worker(process_id: int, port: int, out: Path) -> None:
    if os.environ.get("FAIL_PROCESS") == str(process_id):  # the failure test
        raise RuntimeError(f"process {process_id} fails on purpose")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras

    import keras_lottery as kl

    keras.distribution.initialize(
        job_addresses=f"127.0.0.1:{port}", num_processes=PROCESSES,
        process_id=process_id,
    )
    devices = keras.distribution.list_devices()
    assert len(devices) == PROCESSES * LOCAL_DEVICES, devices
    x, y = _data()
    arrays = {}

    # The reference: one device, the whole batch, in this process.
    reference = _search(_model(), x, y, BATCH, None)
    for r in range(len(reference)):
        for key, mask in reference.masks(r).items():
            arrays[f"single/{r}/{key}"] = mask

    # DataParallel over both processes' devices; only process 0 writes.
    # Each process passes its own share of the data: no auto-sharding.
    data_parallel = keras.distribution.DataParallel(
        devices=devices, auto_shard_dataset=False
    )
    with data_parallel.scope():
        model = _model()
        directory = out / "search" if process_id == 0 else None
        result = _search(model, _local_share(x, process_id),
                         _local_share(y, process_id), BATCH // PROCESSES,
                         directory)
        for r in range(len(result)):
            for key, mask in result.masks(r).items():
                arrays[f"data_parallel/{r}/{key}"] = mask
        # Global-scope pruning, a rewind to a checkpoint, strip.
        kl.checkpoint(model)
        kl.prune(model, rate=0.5, scope="global")
        kl.rewind(model, to="checkpoint")
        for key, mask in kl.get_masks(model).items():
            arrays[f"global/{key}"] = mask
        plain = kl.strip(model)
        arrays["predict"] = np.asarray(plain(x[:BATCH]))
    np.savez(out / f"process_{process_id}.npz", **arrays)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, env: dict | None = None, timeout: float = TIMEOUT):
    """Starts the processes; when one fails (or time runs out) stops the
    others, and raises an error with each one's status and last output."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: give a new directory.")
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    environ = {
        **os.environ, "KERAS_BACKEND": "jax", **(env or {}),
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={LOCAL_DEVICES}",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), *(p for p in sys.path if p)]
        ),
    }
    logs = [open(out / f"log_{i}.txt", "w") for i in range(PROCESSES)]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(i), str(port), str(out)],
            env=environ, stdout=logs[i], stderr=subprocess.STDOUT,
        )
        for i in range(PROCESSES)
    ]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()
    codes = [p.returncode for p in procs]
    if any(codes):
        tails = "\n".join(
            f"--- process {i} (status {c}):\n" + "\n".join(
                (out / f"log_{i}.txt").read_text().splitlines()[-8:])
            for i, c in enumerate(codes)
        )
        reason = "ran past the timeout" if time.monotonic() > deadline else (
            "failed; the others were stopped"
        )
        raise RuntimeError(f"A process of the {PROCESSES}-process run {reason}. "
                           f"Statuses: {codes}.\n{tails}")


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        try:
            worker(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stdout.flush()
            # Now: a normal exit would wait in JAX's shutdown barrier for
            # the other processes, which may never come.
            os._exit(1)
    else:
        launch(Path(sys.argv[1]))
    sys.exit(0)


# ------------------------------------------------------------------- tests
import keras  # noqa: E402
import pytest  # noqa: E402

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution (several JAX processes) is JAX-only.",
)


def test_two_processes_find_the_single_process_masks(tmp_path):
    launch(tmp_path)
    p0 = np.load(tmp_path / "process_0.npz")
    p1 = np.load(tmp_path / "process_1.npz")
    single = {k[len("single/"):]: p0[k] for k in p0.files
              if k.startswith("single/")}
    assert single and {k for k in single if k.startswith("2/")}
    for arrays in (p0, p1):
        for key, mask in single.items():
            np.testing.assert_array_equal(arrays[f"data_parallel/{key}"], mask)
    for key in p0.files:  # the processes agree on everything
        np.testing.assert_array_equal(p0[key], p1[key])
    # Only process 0 wrote the search directory; it holds every round.
    files = sorted(p.name for p in (tmp_path / "search").iterdir())
    assert "round_002.json" in files
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {"search", "process_0.npz", "process_1.npz",
                       "log_0.txt", "log_1.txt"}


def test_a_failing_process_ends_both(tmp_path):
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"failed; the others were stopped") as info:
        launch(tmp_path, env={"FAIL_PROCESS": "1"}, timeout=120)
    assert "process 1 fails on purpose" in str(info.value)
    assert time.monotonic() - start < 120
