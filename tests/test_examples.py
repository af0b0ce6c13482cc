"""Smoke tests of examples/: each script in its quick mode, as a user runs it.

The examples are backend-agnostic scripts; running them on one backend
(JAX) is enough, so on the others these tests skip. `--help` is checked on
every backend (it imports nothing heavy).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import BACKEND, ROOT

EXAMPLES = ROOT / "examples"
SCRIPTS = ("lenet300_mnist.py", "conv_mnist_late_rewind.py",
           "mnist1d_lottery.py", "lstm_sequential_mnist.py", "deploy_tflite.py")

only_jax = pytest.mark.skipif(
    BACKEND != "jax",
    reason="examples are smoke-tested on the JAX backend only "
    f"(this run: {BACKEND})",
)


def run_example(name, *args, timeout=600):
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-3000:]}"
    )
    return proc.stdout


def table_rows(stdout):
    """(round, % remaining) of each row of a SearchResult table."""
    return [
        (int(m.group(1)), float(m.group(2)))
        for m in re.finditer(r"^\s+(\d+)\s+(\d+\.\d\d)\s", stdout, re.M)
    ]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--help"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--full" in proc.stdout and "usage:" in proc.stdout


@only_jax
def test_lenet300_quick(mnist_path, tmp_path):
    out = run_example("lenet300_mnist.py", "--data", mnist_path,
                      "--plot", tmp_path / "lenet.png")
    assert "6000 train / 600 validation / 2000 test" in out
    rows = table_rows(out)
    assert [r for r, _ in rows] == [0, 1, 2]
    # fc layers at 20%, output at 10% per round: 80.04% then 64.06% remain.
    assert rows[1][1] == pytest.approx(80.04, abs=0.01)
    assert rows[2][1] == pytest.approx(64.06, abs=0.01)
    assert "reinit/test_accuracy" in out
    assert (tmp_path / "lenet.png").read_bytes()[:4] == b"\x89PNG"


@only_jax
def test_conv_late_rewind_quick(mnist_path):
    out = run_example("conv_mnist_late_rewind.py", "--data", mnist_path)
    assert out.count("rewound to 20.") == 2  # two prunings in three rounds
    summary = out[out.index("Global pruning"):]
    per_layer = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^(\w+)/kernel\s.*\s(\d+\.\d\d)%$", summary, re.M)
    }
    assert set(per_layer) == {"conv1", "conv2", "fc", "output"}
    # One global threshold over conv1, conv2 and fc: unequal sparsities.
    assert len({per_layer[k] for k in ("conv1", "conv2", "fc")}) == 3


@only_jax
def test_mnist1d_quick(tmp_path):
    out = run_example("mnist1d_lottery.py", "--plot", tmp_path / "m1d.png")
    assert "4000 train / 0 validation / 1000 test" in out
    rows = table_rows(out)
    # Every layer at 20% (the notebook prunes all layers alike).
    assert [p for _, p in rows] == [100.0, 80.0, 64.0, 51.2]
    assert "random_prune/test_accuracy" in out
    assert (tmp_path / "m1d.png").is_file()


@only_jax
def test_lstm_quick(mnist_path):
    out = run_example("lstm_sequential_mnist.py", "--data", mnist_path)
    assert [r for r, _ in table_rows(out)] == [0, 1, 2]
    assert re.search(r"lstm/cell/recurrent_kernel\s+\(32, 128\).*%", out)
    assert re.search(r"lstm/cell/kernel\s+\(28, 128\)", out)


@only_jax
def test_deploy_tflite_quick(mnist_path, tmp_path):
    """Block-pruned ticket -> verified block-sparse .tflite, timed beside dense."""
    from keras_lottery.deploy.tflite.flatbuffer import read_tflite_weights

    pytest.importorskip("ai_edge_litert")
    out = run_example("deploy_tflite.py", "--data", mnist_path,
                      "--output", tmp_path, "--runs", 3)
    assert [r for r, _ in table_rows(out)] == [0, 1, 2]
    assert ("Block alignment of the Dense kernels: {'fc1': 'block', "
            "'fc2': 'block', 'output': 'block'}") in out
    assert out.count("block-sparse 1x4") == 3  # fc1, fc2, output in the report
    assert "Verified: xnnpack max rel. error" in out
    summary = json.loads((tmp_path / "deploy.json").read_text())
    ticket, dense = summary["export"]["ticket"], summary["export"]["dense"]
    assert ticket["sparse"] and not dense["sparse"]
    assert ticket["file_bytes"] < 0.5 * dense["file_bytes"]
    assert [lat["batch_size"] for lat in summary["latency"]["ticket"]] == [1, 32]
    assert all(lat["builtin_ms"] > 0 for lat in summary["latency"]["ticket"])
    assert re.search(r"^\s*ticket\s+1\s+\S+\s+\d+\.\d{4}\s+\d+\.\d\dx$", out,
                     re.M)
    # The file itself: every FullyConnected weight zero in whole 1x4 blocks.
    weights = read_tflite_weights(tmp_path / "ticket_block4x1.tflite")
    assert len(weights) == 3
    for name, w in weights.items():  # TFLite layout [out, in]
        nonzero = (w != 0).reshape(w.shape[0], -1, 4)
        assert (nonzero.all(-1) | ~nonzero.any(-1)).all(), name
        assert 0 < nonzero.mean() < 0.75, name


@only_jax
def test_lenet_reproduction_quick_and_compare(mnist_path):
    """The reproduction benchmark's quick mode, and its side-by-side table."""
    import shutil

    script = ROOT / "benchmarks" / "lenet_reproduction.py"
    tmp = ROOT / "benchmarks" / "results" / "tmp"
    shutil.rmtree(tmp / "lenet_jax_300it_2r_c2_seed0", ignore_errors=True)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--control-rounds", "2",
         "--data", str(mnist_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines()
            if re.match(r"\| [012] \|", line)]
    assert [r[0].strip() for r in rows[:3]] == ["0", "1", "2"]
    # The control ran in round 2 only; the early stop is an iteration count.
    assert [r[3].strip() == "-" for r in rows[:3]] == [True, True, False]
    assert all(int(r[4]) in (100, 200, 300) for r in rows[:3])
    report = tmp / "lenet_jax_300it_s0.json"
    data = json.loads(report.read_text())
    assert data["settings"]["control_rounds"] == [2]
    assert [sorted(r["controls"]) for r in data["runs"][0]["rounds"]] == [
        [], [], ["reinit"]]
    compare = subprocess.run(
        [sys.executable, str(script), "--compare", str(report), str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert "| jax, 1 seed: ticket | re-init |" in compare.stdout
    assert "| 51.3 | - |" in compare.stdout  # round 3 was not run
