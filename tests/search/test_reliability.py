"""The search directory under faults: kills, foreign and damaged files, two
writers, full disks, bad values and file permissions (docs/reliability.md).

The kill tests run a search in a child process and SIGKILL it at one phase
of a round; resuming must give exactly the uninterrupted result. The tests
of file handling do not depend on the backend and run once, on JAX.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import ROOT

import keras_lottery as kl
from keras_lottery._internal.io import BadFileError, atomic_write_text, load_arrays
from keras_lottery._internal.lock import FolderLock, FolderLockedError
from keras_lottery.search.directory import RoundDamagedError

ONCE = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="file handling does not depend on the backend: run once, on JAX",
)
X = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
Y = (X[:, 0] > 0).astype("int32")


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = kl.wrap(keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="fc"),
        keras.layers.Dense(2, name="out")]))
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def fit_fn(model):
    return model.fit(X, Y, epochs=1, batch_size=32, shuffle=False, verbose=0)


def search(directory, rounds=3, seed=0, **kwargs):
    return kl.lottery_search(make_model(seed), kwargs.pop("fit", fit_fn),
                             rounds=rounds, rate=0.5, directory=directory,
                             seed=0, verbose=0, **kwargs)


def outcome(result):
    """What must not change across a kill: metrics, masks, weights."""
    last = result.rounds[-1].round
    return ([r.metrics for r in result.rounds],
            [m.tolist() for m in result.masks(last).values()],
            [w.tolist() for w in result._kept.trained_weights(last)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-round search, and its outcome."""
    directory = tmp_path_factory.mktemp("reference") / "search"
    return directory, outcome(search(directory))


# ------------------------------------------------------------------ kills
_KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    if os.environ["KERAS_BACKEND"] == "torch":
        import torch  # noqa: F401
    sys.path.insert(0, os.environ["TESTS_DIR"])
    import keras_lottery.search.directory as directory_module
    from test_reliability import search, fit_fn
    directory, phase = sys.argv[1], sys.argv[2]

    def hang():
        open(os.path.join(directory, "HANGING"), "w").close()
        time.sleep(600)

    calls = []

    def fit(model):
        calls.append(1)
        if phase == "training" and len(calls) == 3:  # round 2
            hang()
        return fit_fn(model)

    save_arrays, save_text = (directory_module.atomic_save_arrays,
                              directory_module.atomic_write_text)

    def arrays(path, values):
        save_arrays(path, values)
        if phase == "between_files" and str(path).endswith("002.masks.npz"):
            hang()

    def text(path, value):
        save_text(path, value)
        if phase == "after_last_file" and str(path).endswith("002.json"):
            hang()

    directory_module.atomic_save_arrays = arrays
    directory_module.atomic_write_text = text
    search(directory, fit=fit)
    """
)


def _start_and_hang(tmp_path, phase):
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT)
    directory = tmp_path / "search"
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "TESTS_DIR": str(Path(__file__).resolve().parent)}
    proc = subprocess.Popen([sys.executable, str(script), str(directory), phase],
                            env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not (directory / "HANGING").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, f"the search never reached {phase}"
        time.sleep(0.1)
    (directory / "HANGING").unlink()
    return proc, directory


@pytest.mark.parametrize("phase", ["training", "between_files",
                                   "after_last_file"])
def test_sigkill_at_each_phase_of_a_round_resumes_to_the_same_result(
        tmp_path, reference, phase):
    proc, directory = _start_and_hang(tmp_path, phase)
    if phase == "training":
        # A second writer is refused while the first holds the directory,
        # by the holder's pid and host, before it trains anything.
        with pytest.raises(kl.SearchError, match=(
                rf"being written by another lottery_search \(pid {proc.pid} on "
                rf"host '{socket.gethostname()}'")):
            search(directory, fit=lambda m: pytest.fail("trained"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in directory.glob("round_*.json"))
    expected = 3 if phase == "after_last_file" else 2
    assert finished == [f"round_{r:03d}.json" for r in range(expected)]
    # The kill released the lock: resuming here works, and gives exactly
    # the uninterrupted result.
    assert outcome(search(directory)) == reference[1]


# ------------------------------------------------------- foreign / damaged
def _copy(reference, tmp_path) -> Path:
    directory = tmp_path / "copy"
    shutil.copytree(reference[0], directory)
    return directory


@ONCE
def test_a_round_of_another_search_is_refused_by_name(tmp_path, reference):
    other = tmp_path / "other"
    search(other, rounds=2, seed=1)
    directory = _copy(reference, tmp_path)
    shutil.copy(other / "round_002.json", directory / "round_002.json")
    message = r"round_002.json in .* belongs to another search \(id [0-9a-f]{32}"
    with pytest.raises(RoundDamagedError, match=message + r".*upto=1\)"):
        kl.SearchResult.load(directory)
    with pytest.raises(RoundDamagedError, match=message):
        search(directory)  # resume refuses too, and replaces nothing
    assert (directory / "round_002.json").read_bytes() == (
        other / "round_002.json").read_bytes()
    assert len(kl.SearchResult.load(directory, upto=1)) == 2
    # A foreign record without an id, or at another position, is refused too.
    data = json.loads((reference[0] / "round_001.json").read_text())
    atomic_write_text(directory / "round_002.json", json.dumps(data))
    with pytest.raises(RoundDamagedError, match=r"the record of round 1, not "
                       r"of round 2"):
        kl.SearchResult.load(directory)
    del data["integrity"]
    atomic_write_text(directory / "round_002.json", json.dumps(data))
    with pytest.raises(RoundDamagedError, match=r"has no search id"):
        kl.SearchResult.load(directory)


@ONCE
def test_a_damaged_last_round_is_unfinished_and_redone(tmp_path, reference):
    directory = _copy(reference, tmp_path)
    text = (directory / "round_003.json").read_text()
    (directory / "round_003.json").write_text(text[: len(text) // 2])
    with pytest.warns(UserWarning, match=r"round_003.json .* is damaged: it "
                      r"is truncated or not JSON .* Round 3 counts as "
                      r"unfinished"):
        assert len(kl.SearchResult.load(directory)) == 3
    with pytest.warns(UserWarning, match="Round 3 counts as unfinished"):
        resumed = search(directory)
    assert outcome(resumed) == reference[1]
    # Garbage in the last round's weights: the checksum catches it.
    (directory / "round_003.weights.npz").write_bytes(os.urandom(300))
    with pytest.warns(UserWarning, match=r"round_003.weights.npz in .* is "
                      r"damaged: checksum mismatch"):
        assert outcome(search(directory)) == reference[1]


@ONCE
def test_damage_in_an_earlier_round_names_the_file_and_the_recovery(
        tmp_path, reference):
    directory = _copy(reference, tmp_path)
    (directory / "round_001.weights.npz").write_bytes(os.urandom(300))
    with pytest.raises(RoundDamagedError, match=(
            r"round_001.weights.npz in .* is damaged: checksum mismatch .* "
            r"SearchResult.load\(directory, upto=0\) reads rounds 0-0")):
        kl.SearchResult.load(directory)
    with pytest.raises(RoundDamagedError, match=r"round_001\.weights\.npz"):
        search(directory)
    assert len(kl.SearchResult.load(directory, upto=0)) == 1
    (directory / "round_001.weights.npz").unlink()
    with pytest.raises(RoundDamagedError, match=r"round_001.weights.npz .* is "
                       r"missing"):
        kl.SearchResult.load(directory)
    shutil.rmtree(directory)
    directory = _copy(reference, tmp_path)
    (directory / "rewind.npz").write_bytes(b"\0" * 10)
    with pytest.raises(RoundDamagedError, match=r"rewind\.npz .* checksum.* "
                       r"No round of it can be read"):
        kl.SearchResult.load(directory)
    with pytest.raises(ValueError, match=r"upto.*Received: upto=-1"):
        kl.SearchResult.load(directory, upto=-1)


@ONCE
def test_truncated_search_json_and_garbage_npz_name_the_file(tmp_path,
                                                             reference):
    directory = _copy(reference, tmp_path)
    text = (directory / "search.json").read_text()
    (directory / "search.json").write_text(text[:40])
    with pytest.raises(BadFileError, match=r"search.json \(the search's "
                       r"arguments\) is damaged: it is truncated or not JSON"):
        kl.SearchResult.load(directory)
    from keras_lottery.apps.cli import main

    assert main(["report", str(directory)]) == 1
    garbage = tmp_path / "garbage.npz"
    for content in (os.urandom(256), b"", b"PK\x03\x04" + os.urandom(60)):
        garbage.write_bytes(content)
        with pytest.raises(BadFileError) as error:
            load_arrays(garbage, "the weights of round 1")
        assert "garbage.npz (the weights of round 1) is damaged" in str(error.value)
        assert "allow_pickle" not in str(error.value)
        assert "pickle.load" not in str(error.value)


@ONCE
def test_a_directory_written_before_ids_still_loads_and_resumes(tmp_path,
                                                                reference):
    directory = _copy(reference, tmp_path)
    args = json.loads((directory / "search.json").read_text())
    del args["search_id"]
    (directory / "search.json").write_text(json.dumps(args))
    for path in directory.glob("round_*.json"):
        data = json.loads(path.read_text())
        del data["integrity"]
        path.write_text(json.dumps(data))
    (directory / "round_003.json").unlink()
    loaded = kl.SearchResult.load(directory)
    assert len(loaded) == 3
    assert outcome(search(directory)) == reference[1]


# ------------------------------------------------- writers, disks, values
@ONCE
def test_the_lock_names_its_holder_and_is_released(tmp_path):
    holder = rf"pid {os.getpid()} on host '{socket.gethostname()}'"
    with (FolderLock(tmp_path, what="lottery_search"),
          pytest.raises(FolderLockedError, match=holder)):
        FolderLock(tmp_path, what="lottery_search").acquire()
    FolderLock(tmp_path, what="lottery_search").acquire().release()




_WAITER = textwrap.dedent(
    """
    import json, sys, time
    from keras_lottery._internal.lock import FolderLock
    print("waiting", flush=True)
    with FolderLock(sys.argv[1], what="merge", blocking=True) as lock:
        print("got", time.time(), flush=True)
        print(json.loads(lock.path.read_text())["pid"], flush=True)
    """
)


@ONCE
def test_a_blocking_lock_waits_for_the_holder_then_gets_it(tmp_path):
    holder = FolderLock(tmp_path, what="merge").acquire()
    waiter = subprocess.Popen(
        [sys.executable, "-c", _WAITER, str(tmp_path)], stdout=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert waiter.stdout.readline() == "waiting\n"
        time.sleep(1.0)
        assert waiter.poll() is None  # still waiting for the holder
        with pytest.raises(FolderLockedError):  # the default still refuses
            FolderLock(tmp_path, what="merge").acquire()
        released = time.time()
        holder.release()
        out, _ = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    got, pid = out.split("\n")[:2]
    assert waiter.returncode == 0 and float(got.split()[1]) >= released - 0.01
    assert int(pid) == waiter.pid  # it wrote itself in as the holder
    with pytest.raises(TypeError, match="blocking=1"):
        FolderLock(tmp_path, what="merge", blocking=1)
def test_directory_problems_are_found_before_training(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    trained = []

    def fit(model):
        trained.append(1)
        return fit_fn(model)

    with pytest.raises(kl.SearchError, match=r"is a file, not a folder"):
        search(a_file, fit=fit)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "read_only"
        locked.mkdir()
        locked.chmod(0o500)
        with pytest.raises(kl.SearchError, match=r"cannot write files in"):
            search(locked, fit=fit)
    assert not trained


def test_a_write_error_in_a_round_is_a_search_error_with_the_finished_rounds(
        tmp_path, monkeypatch):
    import keras_lottery.search.directory as directory_module

    real = directory_module.atomic_save_arrays

    def full(path, arrays):
        if "round_002" in str(path):
            raise OSError(28, "No space left on device")
        return real(path, arrays)

    monkeypatch.setattr(directory_module, "atomic_save_arrays", full)
    with pytest.raises(kl.SearchError, match=(
            r"could not save round 2 in .*No space left on device\. Rounds "
            r"before 2 are saved; free disk space")) as error:
        search(tmp_path / "s")
    assert error.value.round == 2
    assert [r.round for r in error.value.result.rounds] == [0, 1]
    monkeypatch.setattr(directory_module, "atomic_save_arrays", real)
    assert len(search(tmp_path / "s")) == 4




@ONCE
def test_a_full_disk_while_writing_search_json_is_a_clear_search_error(
        tmp_path, monkeypatch):
    """search.json itself: a SearchError naming the file and the fix, as for
    a round's files, before any training; no part of it is left, and a
    search.json that exists is never rewritten."""
    import keras_lottery.search.directory as directory_module
    from keras_lottery._internal.io import atomic_write

    real = directory_module.atomic_write_text

    def full(path, text):  # the real atomic write; the disk fills half-way
        if Path(path).name != "search.json":
            return real(path, text)

        def half(f):
            f.write(text.encode("utf-8")[:16])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return atomic_write(path, half)

    trained = []

    def fit(model):
        trained.append(1)
        return fit_fn(model)

    directory = tmp_path / "s"
    monkeypatch.setattr(directory_module, "atomic_write_text", full)
    with pytest.raises(kl.SearchError, match=(
            r"^lottery_search could not save the search's arguments "
            r"\(search\.json\) in .*s: OSError: \[Errno 28\] No space left on "
            r"device\. The search did not start; free disk space \(or fix the "
            r"permissions\) and rerun\.$")) as error:
        search(directory, fit=fit)
    assert error.value.round == 0 and len(error.value.result) == 0
    assert error.value.__cause__.errno == errno.ENOSPC and not trained
    assert not [f for f in os.listdir(directory) if "search" in f]  # no part
    monkeypatch.setattr(directory_module, "atomic_write_text", real)
    done = search(directory, rounds=1)  # room again: it starts afresh
    saved = (directory / "search.json").read_bytes()
    monkeypatch.setattr(directory_module, "atomic_write_text", full)
    again = search(directory, rounds=1, fit=fit)  # resumes: nothing to write
    assert (directory / "search.json").read_bytes() == saved and not trained
    assert [r.metrics for r in again] == [r.metrics for r in done]
_ENOSPC_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.environ["TESTS_DIR"])
    import keras_lottery as kl
    from test_reliability import search
    try:
        search(sys.argv[1], rounds=50)
    except kl.SearchError as error:
        print("ROUND", error.round, len(error.result), str(error))
    """
)


@ONCE
def test_a_full_disk_on_a_small_tmpfs_is_a_search_error(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount -t tmpfs -o size=48k tmpfs {mount}"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("mounting a small tmpfs is not allowed here "
                    f"(unshare -rm: {probe.stderr.decode().strip()})")
    script = tmp_path / "enospc.py"
    script.write_text(_ENOSPC_SCRIPT)
    env = {**os.environ, "TESTS_DIR": str(Path(__file__).resolve().parent),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         f"mount -t tmpfs -o size=48k tmpfs {mount} && "
         f"{sys.executable} {script} {mount}/s"],
        env=env, capture_output=True, text=True, timeout=240, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("ROUND")),
                None)
    assert line is not None, done.stdout + done.stderr
    _, round, finished, message = line.split(" ", 3)
    assert int(round) > 0 and int(finished) == int(round)
    assert "No space left on device" in message and "rerun to resume" in message


def test_eval_fn_errors_and_bad_values_are_labelled_eval_fn(tmp_path):
    def failing(model):
        raise RuntimeError("evaluation broke.")

    with pytest.raises(kl.SearchError, match=r"round 0 \(eval_fn\): "
                       r"RuntimeError: evaluation broke\.$") as error:
        search(None, eval_fn=failing)
    assert ".." not in str(error.value)
    with pytest.raises(kl.SearchError, match=r"\(eval_fn\): TypeError: eval_fn "
                       r"must return numbers.*Received: 'acc': None"):
        search(None, eval_fn=lambda m: {"acc": None})


def test_a_nan_metric_is_recorded_and_warned_about_naming_the_round():
    def nan_eval(model):
        return {"accuracy": float("nan")}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = search(None, rounds=1, eval_fn=nan_eval)
    shown = [str(w.message) for w in caught if "non-finite" in str(w.message)]
    assert len(shown) == 2  # once per round
    assert "round 0 recorded non-finite metrics: test_accuracy=nan" in shown[0]
    assert np.isnan(result.rounds[1].metrics["test_accuracy"])
    assert result.rounds[1].to_dict()["metrics"]["test_accuracy"] is None


@ONCE
def test_files_get_the_umask_mode_and_overwriting_keeps_the_mode(tmp_path,
                                                                 reference):
    old = os.umask(0o027)
    try:
        new = atomic_write_text(tmp_path / "new.txt", "a")
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o604)
        atomic_write_text(kept, "new")
    finally:
        os.umask(old)
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604
    expected = 0o666 & ~old
    for path in reference[0].iterdir():
        if path.name != ".keras_lottery.lock":
            assert stat.S_IMODE(path.stat().st_mode) == expected, path.name


# ------------------------------------------------------- export and CLI
_HOLD_FOLDER = (
    "import sys, time\n"
    "from keras_lottery._internal.child import temporary_folder\n"
    "with temporary_folder('convert') as tmp:\n"
    "    print(tmp, flush=True)\n"
    "    time.sleep(600)\n"
)


@ONCE
def test_a_killed_exporter_s_temporary_folder_is_removed_by_the_next_run():
    from keras_lottery._internal.child import temporary_folder

    proc = subprocess.Popen([sys.executable, "-c", _HOLD_FOLDER],
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, text=True)
    left = Path(proc.stdout.readline().strip())
    assert left.is_dir()
    with temporary_folder("convert"):
        assert left.is_dir()  # its process is alive: kept
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    with temporary_folder("convert") as tmp:
        assert not left.exists() and Path(tmp).is_dir()
    assert not Path(tmp).exists()


@ONCE
def test_export_problems_are_found_before_conversion(tmp_path, monkeypatch,
                                                     capsys):
    import keras_lottery.deploy.tflite.export as export_module
    from keras_lottery.apps.cli import main

    monkeypatch.setattr(export_module, "convert",
                        lambda *a, **k: pytest.fail("converted"))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(FileNotFoundError, match=r"the folder .*missing does "
                       r"not exist"):
        kl.export_tflite(model, tmp_path / "missing" / "m.tflite")
    (tmp_path / "dir.tflite").mkdir()
    with pytest.raises(IsADirectoryError, match=r"is a folder"):
        kl.export_tflite(model, tmp_path / "dir.tflite")
    corrupt = tmp_path / "model.keras"
    corrupt.write_bytes(os.urandom(200))
    assert main(["export", str(corrupt), str(tmp_path / "m.tflite")]) == 1
    err = capsys.readouterr().err
    assert "is damaged or not a Keras model" in err and "not found" not in err
    assert main(["export", str(tmp_path / "none.keras"),
                 str(tmp_path / "m.tflite")]) == 1
    assert "No model file at" in capsys.readouterr().err


def test_prune_refuses_nan_or_infinite_weights_naming_the_tensor():
    for bad in (np.nan, np.inf):
        model = make_model()
        kernel = model.get_layer("fc").layer.kernel
        values = keras.ops.convert_to_numpy(kernel).copy()
        values[0, 0] = bad
        kernel.assign(values)
        with pytest.raises(ValueError, match=r"Weight 'fc/kernel' holds NaN or "
                           r"infinite values.*refusing to prune"):
            kl.prune(model, 0.5)
