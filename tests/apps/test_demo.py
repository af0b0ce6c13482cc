"""Tests of `keras_lottery.apps.demo`: the quick demo end to end, per backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_lottery.apps import demo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick demo on this process's backend, shared by the tests below."""
    output = tmp_path_factory.mktemp("demo")
    status = demo.main(
        ["--quick", "--backend", keras.backend.backend(), "--output", str(output)]
    )
    return status, output


def test_quick_demo_exits_cleanly_and_writes_every_file(quick_run):
    status, output = quick_run
    assert status == 0
    for name in ("accuracy_vs_sparsity.png", "rounds.csv", "search.json",
                 "winning_ticket.keras", "winning_ticket.tflite",
                 "dense.tflite", "summary.json"):
        assert (output / name).is_file(), name
        assert (output / name).stat().st_size > 0, name


def test_plot_is_a_valid_png(quick_run):
    _, output = quick_run
    path = output / "accuracy_vs_sparsity.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(image[..., :3].std()) > 0.01  # not a blank canvas


def test_search_record_and_summary(quick_run):
    _, output = quick_run
    search = json.loads((output / "search.json").read_text())
    rounds = search["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["remaining"] == 1.0
    assert rounds[2]["remaining"] < rounds[1]["remaining"] < 1.0
    assert all("reinit" in r["controls"] for r in rounds[1:])
    assert all(0.0 <= r["metrics"]["test_accuracy"] <= 1.0 for r in rounds)
    summary = json.loads((output / "summary.json").read_text())
    assert summary["backend"] == keras.backend.backend()
    assert summary["data"].startswith("mnist1d")
    assert summary["winning_round"] in (0, 1, 2)
    export = summary["export"]
    assert export["ticket_bytes"] == (output / "winning_ticket.tflite").stat().st_size
    assert export["dense_bytes"] == (output / "dense.tflite").stat().st_size
    assert export["latency_batch1"]["ticket"]["builtin_ms"] > 0


def test_ticket_keras_file_loads_and_keeps_the_mask(quick_run):
    import keras_lottery as kl

    _, output = quick_run
    summary = json.loads((output / "summary.json").read_text())
    ticket = keras.saving.load_model(output / "winning_ticket.keras")
    remaining = 1 - kl.summary(ticket, print_fn=None).sparsity
    assert remaining == pytest.approx(summary["winning_remaining"])


def test_tflite_loads_in_litert_and_predicts(quick_run):
    from ai_edge_litert.interpreter import Interpreter

    _, output = quick_run
    for name in ("winning_ticket.tflite", "dense.tflite"):
        interpreter = Interpreter(model_path=str(output / name))
        interpreter.allocate_tensors()
        (inp,) = interpreter.get_input_details()
        (out,) = interpreter.get_output_details()
        assert list(inp["shape"][1:]) == [40]
        interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], np.float32))
        interpreter.invoke()
        logits = interpreter.get_tensor(out["index"])
        assert logits.shape[-1] == 10 and np.all(np.isfinite(logits))


def test_missing_mnist_is_a_clear_error(tmp_path, capsys):
    status = demo.main(["--dataset", "mnist", "--data", str(tmp_path / "no.npz"),
                        "--backend", keras.backend.backend(),
                        "--output", str(tmp_path / "out")])
    assert status == 1
    err = capsys.readouterr().err
    assert "No MNIST file" in err and "x_train" in err


def test_bad_arguments_are_usage_errors(tmp_path):
    with pytest.raises(SystemExit):
        demo.main(["--rounds", "0"])
    with pytest.raises(SystemExit):
        demo.main(["--data", str(tmp_path / "m.npz")])  # needs --dataset mnist
    with pytest.raises(SystemExit):
        demo.main(["--backend", "theano"])


def test_select_backend_keeps_the_current_one():
    assert demo.select_backend(keras.backend.backend(), []) == keras.backend.backend()


def test_backend_option_reexecutes_with_keras_backend_set(tmp_path):
    """--backend restarts the process; the restarted demo reports its backend.

    `--dataset mnist` with a missing file stops right after the backend is
    chosen, so this stays fast.
    """
    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys, keras, keras_lottery.apps.demo as d;"
         "print('started on', keras.backend.backend(), flush=True);"
         "sys.exit(d.main(sys.argv[1:]))",
         "--backend", other, "--dataset", "mnist",
         "--data", str(tmp_path / "none.npz")],
        env={**env, "KERAS_BACKEND": keras.backend.backend()},
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"Restarting on the {other} backend" in proc.stdout
    assert "No MNIST file" in proc.stderr
