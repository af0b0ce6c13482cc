"""One search on two JAX processes (multi-host, on one machine).

The test launches this file twice on 127.0.0.1 (`keras.distribution.
initialize`, 2 processes x 2 CPU devices, JAX's gloo CPU collectives) and
runs a 2-round `lottery_search` under `DataParallel` across the 4 devices;
each process feeds its half of every global batch, and both pass the same
search directory. Every process also runs the same search on one device in
the same process, with the whole batch: the reference. The masks must be
the reference's on both processes, and only process 0 writes the search
directory, each file once (every write of the directory is recorded). Both
processes killed in round 2 and launched again resume after round 1 and end
with the reference's masks. A failure in one process ends both (no hang:
the launcher has a bounded timeout).

JAX only: `keras.distribution` is implemented on JAX alone.

Run by hand: `python tests/search/test_multiprocess.py OUT_DIR` launches
both processes (see `launch`).
"""

from __future__ import annotations

import os
import resource
import signal
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


def _search(model, x, y, batch, directory, fits=None):
    import keras_lottery as kl

    def fit_fn(m):
        if fits is not None:
            fits.append(len(fits))
            if len(fits) == 3 and os.environ.get("KILL_IN_ROUND_2"):
                os.kill(os.getpid(), signal.SIGKILL)  # round 1 is saved
        return m.fit(x, y, batch_size=batch, epochs=2, shuffle=False, verbose=0)

    return kl.lottery_search(model, fit_fn, rounds=2, rate=0.5, seed=0,
                             directory=directory, verbose=0)


def _record_writes(log: list) -> None:
    """Appends the path of every file the search directory writes."""
    from keras_lottery.search import directory as module

    def recording(write):
        def recorded(path, *args, **kwargs):
            log.append(f"{Path(path).parent.name}/{Path(path).name}")
            return write(path, *args, **kwargs)

        return recorded

    for name in ("atomic_save_arrays", "atomic_write_text"):
        setattr(module, name, recording(getattr(module, name)))


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

    # The reference: one device, the whole batch, in this process (not
    # needed by a run that is killed).
    if not os.environ.get("KILL_IN_ROUND_2"):
        single = _model()
        reference = _search(single, x, y, BATCH, None)
        for r in range(len(reference)):
            for key, mask in reference.masks(r).items():
                arrays[f"single/{r}/{key}"] = mask
        arrays["reference_weights"] = single.get_weights()[0]  # as round 2 ended

    # DataParallel over both processes' devices; both pass the directory,
    # only process 0 writes it. Each process passes its own share of the
    # data: no auto-sharding.
    data_parallel = keras.distribution.DataParallel(
        devices=devices, auto_shard_dataset=False
    )
    writes, fits = [], []
    _record_writes(writes)
    with data_parallel.scope():
        model = _model()
        result = _search(model, _local_share(x, process_id),
                         _local_share(y, process_id), BATCH // PROCESSES,
                         out / "search", fits)
        arrays["fits"] = np.array(len(fits))
        arrays["pid"] = np.array(os.getpid())
        _record_masks(arrays, "data_parallel", "global", model, result)
        plain = kl.strip(model)
        arrays["predict"] = np.asarray(plain(x[:BATCH]))
    if os.environ.get("MODEL_PARALLEL"):
        _model_parallel(devices, x, y, out, arrays)
    arrays["writes"] = np.array(writes, dtype=str)
    arrays["peak_rss_kib"] = np.array(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    np.savez(out / f"process_{process_id}.npz", **arrays)


def _model_parallel(devices, x, y, out: Path, arrays: dict) -> None:
    """ModelParallel with every kernel split across both processes (a
    1 x 4 mesh: each process holds half of each kernel's columns): the
    same search, saved, then a global prune and a rewind."""
    import keras


    mesh = keras.distribution.DeviceMesh((1, 4), ("batch", "model"), devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["dense.*kernel"] = (None, "model")
    with keras.distribution.ModelParallel(
        layout_map=layout_map, auto_shard_dataset=False  # one batch row
    ).scope():
        model = _model()
        wrapper = model.layers[0]
        arrays["model_parallel/split"] = np.array([
            not v.value.is_fully_addressable for v in (
                wrapper.prunable_variable("kernel"),
                wrapper.mask_variable("kernel"))])
        # The batch axis has one row: every process feeds the whole batch.
        result = _search(model, x, y, BATCH, out / "search_mp")
        _record_masks(arrays, "model_parallel", "model_parallel/global", model,
                      result)


def _record_masks(arrays: dict, rounds: str, pruned: str, model, result) -> None:
    """The search's masks per round under `rounds/`, then the masks of a
    global-scope prune followed by a rewind to a checkpoint under `pruned/`."""
    import keras_lottery as kl

    for r in range(len(result)):
        for key, mask in result.masks(r).items():
            arrays[f"{rounds}/{r}/{key}"] = mask
    kl.checkpoint(model)
    kl.prune(model, rate=0.5, scope="global")
    kl.rewind(model, to="checkpoint")
    for key, mask in kl.get_masks(model).items():
        arrays[f"{pruned}/{key}"] = mask


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, env: dict | None = None, timeout: float = TIMEOUT,
           again: bool = False):
    """Starts the processes; when one fails (or time runs out) stops the
    others, and raises an error with each one's status and last output.
    `again`: into the `out` of an earlier launch (its search resumes)."""
    if out.exists() and any(out.iterdir()) and not again:
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
import json  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

import keras_lottery as kl  # noqa: E402
from keras_lottery._internal.lock import LOCK_NAME  # noqa: E402
from keras_lottery.search.directory import SearchDirectory  # noqa: E402

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution (several JAX processes) is JAX-only.",
)


def _load(out: Path) -> list:
    return [dict(np.load(out / f"process_{i}.npz")) for i in range(PROCESSES)]


def _check_masks(processes: list) -> None:
    """Both processes found the one-device masks, and agree on everything
    (but their pids)."""
    p0, p1 = processes
    single = {k[len("single/"):]: p0[k] for k in p0 if k.startswith("single/")}
    assert single and {k for k in single if k.startswith("2/")}
    for arrays in (p0, p1):
        for key, mask in single.items():
            np.testing.assert_array_equal(arrays[f"data_parallel/{key}"], mask)
    for key in p0:
        if key not in ("pid", "writes", "peak_rss_kib"):
            np.testing.assert_array_equal(p0[key], p1[key])


def _check_one_writer(out: Path, processes: list, rounds,
                      searches=("search",)) -> None:
    """Process 0 wrote each file of `rounds` once; process 1 wrote none."""
    p0, p1 = processes
    assert p1["writes"].size == 0
    written = p0["writes"].tolist()
    assert len(written) == len(set(written))  # no file written twice
    files = [f"round_{r:03d}.{kind}" for r in rounds
             for kind in ("json", "masks.npz", "weights.npz")]
    if 0 in rounds:
        files += ["search.json", "rewind.npz"]
    assert set(written) == {f"{s}/{f}" for s in searches for f in files}
    for search in searches:  # only process 0 took the lock
        holder = json.loads((out / search / LOCK_NAME).read_text())
        assert holder["pid"] == int(p0["pid"])


def test_two_processes_find_the_single_process_masks(tmp_path):
    # Selection forced onto the device: replicated weights select there,
    # weights split across the processes fall back to the host path.
    launch(tmp_path, env={"MODEL_PARALLEL": "1",
                          "KERAS_LOTTERY_SELECTION": "device"})
    processes = _load(tmp_path)
    _check_masks(processes)
    _check_one_writer(tmp_path, processes, rounds=(0, 1, 2),
                      searches=("search", "search_mp"))
    assert [int(p["fits"]) for p in processes] == [3, 3]
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {"search", "search_mp", "process_0.npz", "process_1.npz",
                       "log_0.txt", "log_1.txt"}
    # ModelParallel, each kernel (and its mask) split across the processes:
    # the one-device masks too, after the search and after a global prune.
    p0 = processes[0]
    assert p0["model_parallel/split"].tolist() == [True, True]
    for key in [k for k in p0 if k.startswith("single/")]:
        np.testing.assert_array_equal(p0[f"model_parallel/{key[7:]}"], p0[key])
    for key in [k for k in p0 if k.startswith("global/")]:
        np.testing.assert_array_equal(p0[f"model_parallel/{key}"], p0[key])
    # The saved weights of a split kernel are whole (gathered).
    saved = SearchDirectory(tmp_path / "search_mp").read_weights(2)[0]
    np.testing.assert_allclose(saved, p0["reference_weights"], atol=1e-5)


def test_both_processes_killed_resume_after_the_last_round(tmp_path):
    with pytest.raises(RuntimeError, match=r"Statuses: \[-9, -9\]"):
        launch(tmp_path, env={"KILL_IN_ROUND_2": "1"})
    assert not list(tmp_path.glob("process_*.npz"))
    assert kl.SearchResult.load(tmp_path / "search").rounds[-1].round == 1
    launch(tmp_path, again=True)
    processes = _load(tmp_path)
    # Each process trained round 2 only, and ended with the masks of an
    # uninterrupted search (the one-device reference's).
    assert [int(p["fits"]) for p in processes] == [1, 1]
    _check_masks(processes)
    _check_one_writer(tmp_path, processes, rounds=(2,))


def test_a_failing_process_ends_both(tmp_path):
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"failed; the others were stopped") as info:
        launch(tmp_path, env={"FAIL_PROCESS": "1"}, timeout=120)
    assert "process 1 fails on purpose" in str(info.value)
    assert time.monotonic() - start < 120
