"""Traps a new user hit, each with a clear error up front (issue 16)."""

from __future__ import annotations

import keras
import pytest

import keras_lottery as kl


def test_every_error_shares_one_base_and_keeps_its_builtin_one():
    assert issubclass(kl.SearchError, kl.KerasLotteryError)
    assert issubclass(kl.SearchError, RuntimeError)
    assert issubclass(kl.ExportError, kl.KerasLotteryError)
    assert issubclass(kl.ExportError, RuntimeError)
    assert issubclass(kl.ShrinkError, kl.KerasLotteryError)
    assert issubclass(kl.ShrinkError, ValueError)


def test_lottery_search_on_an_uncompiled_model_fails_up_front():
    model = kl.wrap(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    calls = []
    with pytest.raises(ValueError, match=r"not compiled.*model.compile"):
        kl.lottery_search(model, calls.append, rounds=1, verbose=0)
    assert calls == []  # round 0 never started


@pytest.mark.parametrize("step", ["init", -1, 1.5, True])
def test_rewind_checkpoint_that_cannot_fire_is_refused(step):
    with pytest.raises(ValueError, match=r"Received: step="):
        kl.RewindCheckpoint(step)


def test_make_test_summary_line_is_the_pytest_count(tmp_path):
    import re
    import subprocess

    log = tmp_path / "log"
    log.write_text("E0000 TF error: something\n3 failed, 10 passed in 1.0s\n"
                   "W0000 a warning after\n")
    from pathlib import Path

    makefile = Path(kl.__file__).resolve().parents[1] / "Makefile"
    pattern = re.search(r'grep -E "([^"]+)"', makefile.read_text()).group(1)
    out = subprocess.run(["grep", "-E", pattern, str(log)], capture_output=True,
                         text=True).stdout.strip().splitlines()
    assert out == ["3 failed, 10 passed in 1.0s"]


def test_best_ticket_record_gives_the_model_through_ticket(rng):
    model = kl.wrap(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    model.compile("sgd", "mse")
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    result = kl.lottery_search(
        model, lambda m: m.fit(x, y, epochs=1, verbose=0), rounds=1, verbose=0)
    record = result.best_ticket(tolerance=10.0)
    ticket = result.ticket(record, trained=True)
    assert isinstance(ticket, keras.Model)
    with pytest.raises(TypeError, match=r"RoundRecord.*result.ticket"):
        kl.strip(record)


def test_rates_take_the_wrapper_name_the_layer_name_and_subclasses():
    class MyDense(keras.layers.Dense):
        pass

    model = kl.wrap(keras.Sequential([
        keras.Input((8,)), keras.layers.Dense(8, name="fc"),
        MyDense(8, name="mine"), keras.layers.Dense(2, name="out")]))
    for key in ("fc", "prunable_fc"):
        report = kl.prune(model, 0.5, rates={key: 0.0})
        assert {w.name: w.rate for w in report.weights}["fc/kernel"] == 0.0
    report = kl.prune(model, 0.5, rates={keras.layers.Dense: 0.1, "out": 0.0})
    rates = {w.name: w.rate for w in report.weights}
    assert rates == {"fc/kernel": 0.1, "mine/kernel": 0.1, "out/kernel": 0.0}
