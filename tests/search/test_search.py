"""LotterySchedule and lottery_search: rounds, controls, resume, results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import ROOT

import keras_lottery as kl
from keras_lottery.core.model import wrappers
from keras_lottery.pruning.report import pruned_count


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype("float32")
    y = ((x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)).astype("int32")
    return x, y


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu", name="fc1"),
            keras.layers.Dense(3, name="out"),
        ]
    )
    model = kl.wrap(model)
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


X, Y = data()


def fit_fn(model, callbacks=None):
    return model.fit(
        X, Y, epochs=2, batch_size=32, shuffle=False, verbose=0,
        validation_data=data(32, 1), callbacks=callbacks or [],
    )


def expected_counts(rounds, rate=0.5):
    fc, out = 12 * 16, 16 * 3
    for _ in range(rounds):
        fc -= pruned_count(rate, fc)
        out -= pruned_count(rate / 2, out)
    return {"fc1/kernel": fc, "out/kernel": out}


def test_search_follows_the_rate_and_tickets_reproduce_masks():
    model = make_model()
    result = kl.lottery_search(model, fit_fn, rounds=3, rate=0.5, seed=0, verbose=0)
    assert [r.round for r in result.rounds] == [0, 1, 2, 3]
    for record in result.rounds:
        want = expected_counts(record.round)
        assert {k: v[0] for k, v in record.layers.items()} == want
        total = 12 * 16 + 16 * 3
        assert record.remaining == pytest.approx(sum(want.values()) / total)
        assert {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(record.metrics)
        assert 1 <= record.early_stop <= 2
    ticket = result.ticket(2)
    for key, mask in kl.get_masks(ticket).items():
        np.testing.assert_array_equal(mask, result.masks(2)[key])
    # The ticket sits at theta_0 (pruned weights at 0.0), ready to train.
    theta0 = result._kept.rewind_point()
    masks = {
        id(w.prunable_variable(n)): w.get_mask(n)
        for w in wrappers(ticket).values() for n in w.weight_names
    }
    for a, v in zip(theta0, ticket.trainable_weights):
        expected = np.where(masks[id(v)] > 0, a, 0.0) if id(v) in masks else a
        np.testing.assert_array_equal(expected, keras.ops.convert_to_numpy(v))
    trained = result.ticket(3, trained=True)
    np.testing.assert_allclose(
        trained.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6
    )


def test_callback_and_driver_give_the_same_masks():
    driver = make_model()
    kl.lottery_search(driver, fit_fn, rounds=2, rate=0.5, verbose=0)
    callback = make_model()
    schedule = kl.LotterySchedule(rate=0.5, epochs_per_round=2)
    history = callback.fit(
        X, Y, epochs=6, batch_size=32, shuffle=False, verbose=0,
        validation_data=data(32, 1), callbacks=[schedule],
    )
    assert history.history["round"] == [0, 0, 1, 1, 2, 2]
    sparsity = history.history["sparsity"]
    assert sparsity[0] == 0 and sparsity[2] > 0 and sparsity[4] > sparsity[2]
    assert [r["round"] for r in schedule.rounds] == [0, 1, 2]
    for key, mask in kl.get_masks(driver).items():
        np.testing.assert_array_equal(kl.get_masks(callback)[key], mask)


def test_callback_late_rewinding_and_optimizer_reset():
    model = make_model()
    schedule = kl.LotterySchedule(rate=0.5, epochs_per_round=1, rewind_to=2)
    model.fit(X, Y, epochs=2, batch_size=32, verbose=0, callbacks=[schedule])
    # After the only pruning the optimizer restarted: 3 steps in round 1.
    assert int(model.optimizer.iterations) == 3
    assert len(schedule.reports) == 1


def test_controls_are_trained_and_shown_beside_the_ticket(tmp_path):
    model = make_model()
    result = kl.lottery_search(
        model, fit_fn, rounds=1, rate=0.5, control=["reinit", "random_prune"],
        eval_fn=lambda m: m.evaluate(X, Y, verbose=0, return_dict=True),
        seed=0, verbose=0,
    )
    last = result.rounds[-1]
    assert set(last.controls) == {"reinit", "random_prune"}
    assert "test_accuracy" in last.controls["reinit"]
    assert "test_accuracy" in last.metrics
    assert "reinit/test_accuracy" in result.table()
    png = result.plot(tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[0] > 100


def test_control_rounds_train_the_controls_only_where_asked(tmp_path):
    calls = []

    def counting_fit(model):
        calls.append(1)
        return fit_fn(model)

    result = kl.lottery_search(
        make_model(), counting_fit, rounds=3, rate=0.5, control="reinit",
        control_rounds=[3, 1, 3], directory=tmp_path, seed=0, verbose=0,
    )
    assert len(calls) == 4 + 2  # four rounds, controls in rounds 1 and 3
    assert [sorted(r.controls) for r in result.rounds] == [
        [], ["reinit"], [], ["reinit"]]
    assert result.args["control_rounds"] == [1, 3]
    # The ticket does not depend on when the controls ran.
    plain = kl.lottery_search(make_model(), fit_fn, rounds=3, rate=0.5,
                              control="reinit", seed=0, verbose=0)
    for a, b in zip(result.rounds, plain.rounds):
        assert a.metrics == pytest.approx(b.metrics, rel=1e-5, abs=1e-6)
    assert result.rounds[3].controls["reinit"] == pytest.approx(
        plain.rounds[3].controls["reinit"], rel=1e-5, abs=1e-6)
    table = result.table()
    assert "reinit/accuracy" in table
    png = result.plot(tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = kl.SearchResult.load(tmp_path)
    assert [sorted(r.controls) for r in loaded.rounds] == [
        [], ["reinit"], [], ["reinit"]]
    # Resuming with other control rounds is refused, naming the argument.
    with pytest.raises(ValueError, match="control_rounds"):
        kl.lottery_search(make_model(), fit_fn, rounds=3, rate=0.5,
                          control="reinit", control_rounds=[2],
                          directory=tmp_path, seed=0, verbose=0)


@pytest.mark.parametrize("bad", [[0], [1.5], "1", [True]])
def test_control_rounds_bad_values_are_clear_errors(bad):
    with pytest.raises(ValueError, match=r"control_rounds.*Received"):
        kl.lottery_search(make_model(), fit_fn, rounds=1, control="reinit",
                          control_rounds=bad, verbose=0)


def test_control_rounds_without_a_control_is_an_error():
    with pytest.raises(ValueError, match="no `control` was given"):
        kl.lottery_search(make_model(), fit_fn, rounds=1, control_rounds=[1],
                          verbose=0)


class _Scripted(keras.callbacks.Callback):
    """Writes a given value of `score` into each epoch's logs, and records
    the test metrics a full evaluation gives after every epoch."""

    def __init__(self, scores):
        super().__init__()
        self.scores, self.every = scores, []

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.scores[epoch]
        self.every.append(self.model.evaluate(X, Y, verbose=0, return_dict=True))


def test_early_stop_readout_reads_the_test_metrics_at_the_best_epoch():
    model = make_model()
    scripted = _Scripted([0.1, 0.5, float("nan"), 0.5, 0.2])  # ties: earliest
    readout = kl.EarlyStopReadout((X, Y), monitor="score", mode="max",
                                  steps_per_epoch=3, batch_size=32)
    model.fit(X, Y, epochs=5, batch_size=32, verbose=0,
              callbacks=[scripted, readout])
    assert readout.early_stop == 2 * 3  # epoch 1 (0-based), 3 steps each
    assert readout.at_early_stop == pytest.approx(scripted.every[1], rel=1e-6)
    assert readout.final == pytest.approx(scripted.every[-1], rel=1e-6)
    # It saw the trained weights (JAX trains on copies and syncs them back).
    after = model.evaluate(X, Y, verbose=0, return_dict=True)
    assert readout.final == pytest.approx(after, rel=1e-6)
    metrics = readout.metrics()
    assert metrics["early_stop"] == 6
    assert metrics["test_accuracy_at_early_stop"] == pytest.approx(
        scripted.every[1]["accuracy"])
    assert metrics["test_accuracy"] == pytest.approx(scripted.every[-1]["accuracy"])
    # Reused for another fit, it starts over; epochs are counted without
    # steps_per_epoch, and val_loss is the default monitor.
    readout = kl.EarlyStopReadout((X, Y))
    history = model.fit(X, Y, epochs=4, batch_size=32, verbose=0,
                        validation_data=data(32, 1), callbacks=[readout])
    val_loss = history.history["val_loss"]
    assert readout.early_stop == int(np.argmin(val_loss)) + 1


def test_early_stop_readout_feeds_lottery_search():
    def fit_with_readout(model):
        readout = kl.EarlyStopReadout((X, Y), steps_per_epoch=3)
        model.fit(X, Y, epochs=3, batch_size=32, verbose=0,
                  validation_data=data(32, 1), callbacks=[readout])
        return readout.metrics()

    result = kl.lottery_search(make_model(), fit_with_readout, rounds=1,
                               rate=0.5, control="reinit", verbose=0)
    for record in result.rounds:
        assert record.early_stop in (3, 6, 9)
        assert "test_accuracy_at_early_stop" in record.metrics
    assert result.rounds[1].controls_early_stop["reinit"] in (3, 6, 9)


def test_early_stop_readout_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"mode.*Received: mode='lowest'"):
        kl.EarlyStopReadout((X, Y), mode="lowest")
    with pytest.raises(ValueError, match=r"steps_per_epoch.*Received"):
        kl.EarlyStopReadout((X, Y), steps_per_epoch=0)
    with pytest.raises(ValueError, match="Received a tuple of 3 items"):
        kl.EarlyStopReadout((X, Y, Y))
    model = make_model()
    with pytest.raises(ValueError, match=r"'val_loss', which is not.*validation_data"):
        model.fit(X, Y, epochs=1, verbose=0,
                  callbacks=[kl.EarlyStopReadout((X, Y))])


def test_rewind_to_none_is_train_prune_finetune():
    model = make_model()
    result = kl.lottery_search(model, fit_fn, rounds=1, rewind_to=None, verbose=0)
    assert len(result) == 2


def test_target_sparsity_with_rounds_derives_the_rate():
    model = make_model()
    result = kl.lottery_search(
        model, fit_fn, rounds=2, target_sparsity=0.75, verbose=0
    )
    assert 1 - result.rounds[-1].remaining == pytest.approx(0.75, abs=0.01)
    only_target = kl.lottery_search(
        make_model(), fit_fn, target_sparsity=0.5, rate=0.4, verbose=0
    )
    assert 1 - only_target.rounds[-1].remaining >= 0.5
    assert 1 - only_target.rounds[-2].remaining < 0.5


def test_target_sparsity_counts_the_units_prune_removes():
    """Channel pruning removes whole units (12 or 16 weights here): the
    derived rate is the smallest whose rounds reach the target, so the
    search lands on it or within one unit above, never short of it."""
    for target in (0.3, 0.5, 0.7):
        result = kl.lottery_search(
            make_model(), fit_fn, rounds=2, target_sparsity=target,
            granularity="channel", verbose=0,
        )
        reached = 1 - result.rounds[-1].remaining
        assert target <= reached < target + 16 / 240, (target, reached)
        masks = kl.get_masks(result.ticket(2))
        # Whole units of fc1 (its columns) are gone or kept, with the
        # output layer's input rows (one channel group); the output
        # layer's classes are never pruned.
        fc1 = masks["fc1/kernel"]
        assert set(fc1.min(axis=0)) == set(fc1.max(axis=0))
        np.testing.assert_array_equal(masks["out/kernel"].any(axis=1),
                                      fc1.any(axis=0))


def test_result_json_csv_round_trip(tmp_path):
    result = kl.lottery_search(make_model(), fit_fn, rounds=1, verbose=0)
    again = kl.SearchResult.from_json(result.to_json(tmp_path / "r.json"))
    assert again.to_dict() == result.to_dict()
    assert kl.SearchResult.from_json(tmp_path / "r.json").table() == result.table()
    csv_text = result.to_csv()
    assert csv_text.splitlines()[0].startswith("round,remaining_percent")
    assert len(csv_text.splitlines()) == 3
    assert result.best_ticket(tolerance=1.0).round == 1


def test_bad_fit_fn_errors_name_the_round_and_keep_finished_rounds(tmp_path):
    calls = []

    def breaks_in_round_1(model):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return fit_fn(model)

    with pytest.raises(kl.SearchError, match="round 1") as info:
        kl.lottery_search(
            make_model(), breaks_in_round_1, rounds=3, directory=tmp_path,
            verbose=0,
        )
    assert info.value.round == 1 and len(info.value.result) == 1
    assert (tmp_path / "round_000.json").exists()
    assert not (tmp_path / "round_001.json").exists()

    with pytest.raises(kl.SearchError, match="History"):
        kl.lottery_search(make_model(), lambda m: None, rounds=1, verbose=0)

    def nan_loss(model):
        return {"loss": float("nan"), "accuracy": 0.1}

    with pytest.raises(kl.SearchError, match="non-finite loss"):
        kl.lottery_search(make_model(), nan_loss, rounds=1, verbose=0)


def test_fit_fn_gets_the_callbacks_only_where_it_asks_for_them():
    """`callbacks` by name (or a required second parameter) gets the search's
    callbacks; a second parameter with a default and another name is the
    user's own and keeps its default."""
    seen = {}

    def by_name(model, *, epochs=1, callbacks=None):
        seen["by_name"] = (epochs, callbacks)
        return fit_fn(model, callbacks)

    def required(model, cbs):
        seen["required"] = cbs
        return fit_fn(model, cbs)

    def own_default(model, k=8):
        seen["own_default"] = k
        return fit_fn(model)

    def var_kwargs(model, **kwargs):
        seen["var_kwargs"] = kwargs
        return fit_fn(model, kwargs["callbacks"])

    for fn in (by_name, required, own_default, var_kwargs):
        kl.lottery_search(make_model(), fn, rounds=1, rewind_to=None, verbose=0)
    assert seen["by_name"] == (1, [])
    assert seen["required"] == []
    assert seen["own_default"] == 8
    assert seen["var_kwargs"] == {"callbacks": []}
    # Late rewinding hands over its checkpoint callback (in round 0) this way.
    round0 = []

    def late(model, callbacks=None):
        round0.append(list(callbacks))
        return fit_fn(model, callbacks)

    kl.lottery_search(make_model(), late, rounds=1, rewind_to=2, verbose=0)
    assert [type(c) for c in round0[0]] == [kl.RewindCheckpoint]
    with pytest.raises(ValueError, match=r"fit_fn\(model, k=8\) takes no callbacks"):
        kl.lottery_search(make_model(), own_default, rounds=1, rewind_to=2)


def test_bad_arguments_are_clear_errors(tmp_path):
    model = make_model()
    with pytest.raises(ValueError, match="rounds"):
        kl.lottery_search(model, fit_fn)
    with pytest.raises(ValueError, match="control"):
        kl.lottery_search(model, fit_fn, rounds=1, control="shuffle")
    with pytest.raises(ValueError, match="callbacks"):
        kl.lottery_search(model, lambda m: m.fit(X, Y), rounds=1, rewind_to=5)
    with pytest.raises(TypeError, match="callable"):
        kl.lottery_search(model, "fit", rounds=1)
    kl.lottery_search(model, fit_fn, rounds=1, directory=tmp_path, verbose=0)
    with pytest.raises(ValueError, match="different arguments"):
        kl.lottery_search(
            make_model(), fit_fn, rounds=1, rate=0.3, directory=tmp_path,
            verbose=0,
        )


# ------------------------------------------------- traps (issue 16)
def unnamed_model(hidden=16, layers=1):
    """The same Sequential each call, with Keras' automatic layer names
    (`dense_4`, `dense_5`, ... : new ones every time it is built)."""
    model = kl.wrap(keras.Sequential([
        keras.Input((12,)),
        *[keras.layers.Dense(hidden, activation="relu") for _ in range(layers)],
        keras.layers.Dense(3),
    ]))
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_resume_matches_the_architecture_not_the_layer_names(tmp_path):
    """A notebook cell run again builds the same model with new automatic
    layer names: resuming its search works; another shape is refused,
    naming the weight that differs."""
    first, second = unnamed_model(), unnamed_model()
    assert list(kl.get_masks(first)) != list(kl.get_masks(second))
    calls = []

    def preempted_in_round_1(model):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("pre-empted")
        return fit_fn(model)

    with pytest.raises(KeyboardInterrupt):
        kl.lottery_search(first, preempted_in_round_1, rounds=2, rate=0.5,
                          directory=tmp_path, seed=0, verbose=0)
    assert [p.name for p in tmp_path.glob("round_*.json")] == ["round_000.json"]
    result = kl.lottery_search(second, fit_fn, rounds=2, rate=0.5,
                               directory=tmp_path, seed=0, verbose=0)
    assert [r.round for r in result.rounds] == [0, 1, 2]
    assert len(calls) == 2  # round 0 was not trained again
    for saved, built in zip(result.masks(2).values(),
                            kl.get_masks(result.ticket(2)).values()):
        np.testing.assert_array_equal(saved, built)
    again = kl.SearchResult.load(tmp_path, model=unnamed_model())
    assert kl.summary(again.ticket(1), print_fn=None).remaining == (
        result[1].layers[next(iter(result[1].layers))][0]
        + list(result[1].layers.values())[1][0])

    with pytest.raises(ValueError, match=(
            r"another architecture: prunable weight 0 \('dense\w*/kernel' "
            r"saved, 'dense\w*/kernel' now\) has shape \[12, 16\] saved vs "
            r"\[12, 8\] now.*nothing was overwritten")):
        kl.lottery_search(unnamed_model(hidden=8), fit_fn, rounds=2, rate=0.5,
                          directory=tmp_path, seed=0, verbose=0)
    with pytest.raises(ValueError, match=(
            r"the saved search has 2 prunable weights \[\[12, 16\], \[16, 3\]\]"
            r", this model has 3")):
        kl.lottery_search(unnamed_model(layers=2), fit_fn, rounds=2, rate=0.5,
                          directory=tmp_path, seed=0, verbose=0)
    assert len(kl.SearchResult.load(tmp_path)) == 3  # nothing overwritten


def test_from_json_builds_tickets_from_its_search_directory(tmp_path):
    directory = tmp_path / "search"
    result = kl.lottery_search(make_model(), fit_fn, rounds=1, rate=0.5,
                               directory=directory, seed=0, verbose=0)
    result.to_json(tmp_path / "result.json")
    again = kl.SearchResult.from_json(tmp_path / "result.json", model=make_model())
    assert again.directory == directory
    np.testing.assert_allclose(
        again.ticket(1, trained=True).predict(X, verbose=0),
        result.ticket(1, trained=True).predict(X, verbose=0), atol=1e-6)
    # Without a model, ticket says how to pass one.
    with pytest.raises(ValueError, match=r"holds no model.*ticket\(1, model="):
        kl.SearchResult.from_json(tmp_path / "result.json").ticket(1)
    # JSON alone keeps the numbers only: ticket says where masks are kept.
    alone = kl.lottery_search(make_model(), fit_fn, rounds=1, verbose=0)
    text = alone.to_json()
    with pytest.raises(ValueError, match=(
            r"masks of round 1 are not in this result: to_json keeps the "
            r"numbers only.*SearchResult.load\(directory, model=")):
        kl.SearchResult.from_json(text, model=make_model()).ticket(1)
    # A result is never written over the search's own files.
    with pytest.raises(ValueError, match="file of the search directory"):
        result.to_json(directory / "search.json")
    assert kl.SearchResult.load(directory).args == result.args


def test_best_model_is_the_winning_ticket_trained(tmp_path):
    model = make_model()
    result = kl.lottery_search(model, fit_fn, rounds=2, rate=0.5,
                               directory=tmp_path, seed=0, verbose=0)
    record = result.best_ticket(tolerance=1.0)
    assert record.round == 2
    winner = result.best_model(tolerance=1.0)
    np.testing.assert_allclose(winner.predict(X, verbose=0),
                               model.predict(X, verbose=0), atol=1e-6)
    assert kl.summary(winner, print_fn=None).remaining == sum(
        v[0] for v in record.layers.values())
    plain = kl.strip(winner)  # what to save or export
    assert not kl.coverage(plain)[0]
    # Read back from disk, the architecture comes from the caller.
    loaded = kl.SearchResult.load(tmp_path)
    with pytest.raises(ValueError, match=r"holds no model.*model=make_model\(\)"):
        loaded.best_model(tolerance=1.0)
    np.testing.assert_allclose(
        loaded.best_model(tolerance=1.0, model=make_model()).predict(X, verbose=0),
        model.predict(X, verbose=0), atol=1e-6)
    # A record where a model is expected says how to get the model.
    with pytest.raises(TypeError, match=r"RoundRecord.*result.ticket"):
        kl.summary(record)


def test_prune_options_are_keyword_arguments_checked_up_front(tmp_path):
    calls = []

    def counting_fit(model):
        calls.append(1)
        return fit_fn(model)

    with pytest.raises(TypeError, match=r"lottery_search got unexpected keyword "
                       r"argument\(s\) \['granularty'\]"):
        kl.lottery_search(make_model(), counting_fit, rounds=1, granularty="channel",
                          directory=tmp_path / "typo", verbose=0)
    with pytest.raises(ValueError, match="scope"):
        kl.lottery_search(make_model(), counting_fit, rounds=1, scope="globl",
                          verbose=0)
    assert calls == [] and not (tmp_path / "typo").exists()

    by_keyword = kl.lottery_search(
        make_model(), fit_fn, rounds=1, rate=0.5, granularity="channel",
        scope="global", directory=tmp_path / "kw", seed=0, verbose=0)
    assert by_keyword.args["scope"] == "global"
    assert by_keyword.args["prune_options"] == {"granularity": "'channel'"}
    with pytest.warns(DeprecationWarning, match=r"pass the prune options as "
                      r"keyword arguments, lottery_search\(\.\.\., "
                      r"granularity='channel'\)"):
        by_dict = kl.lottery_search(
            make_model(), fit_fn, rounds=1, rate=0.5, scope="global",
            prune_options={"granularity": "channel"}, seed=0, verbose=0)
    for a, b in zip(by_dict.masks(1).values(), by_keyword.masks(1).values()):
        np.testing.assert_array_equal(a, b)
    # Resuming with other prune options is refused, naming them.
    with pytest.raises(ValueError, match=r"different arguments \(prune_options"):
        kl.lottery_search(make_model(), fit_fn, rounds=1, rate=0.5,
                          scope="global", directory=tmp_path / "kw", seed=0,
                          verbose=0)
    with pytest.raises(TypeError, match=r"`seed` is lottery_search.s own argument"):
        kl.lottery_search(make_model(), fit_fn, rounds=1,
                          prune_options={"seed": 1}, verbose=0)
    with pytest.raises(TypeError, match=r"\['scope'\] given both"):
        kl.lottery_search(make_model(), fit_fn, rounds=1, scope="layer",
                          prune_options={"scope": "global"}, verbose=0)


_RESUME_SCRIPT = textwrap.dedent(
    """
    import os, sys, time, json
    if os.environ["KERAS_BACKEND"] == "torch":
        import torch  # noqa: F401
    sys.path.insert(0, os.environ["TESTS_DIR"])
    import numpy as np, keras, keras_lottery as kl
    from test_search import make_model, fit_fn
    directory, hang = sys.argv[1], sys.argv[2] == "hang"
    calls = []

    def fit(model, callbacks=None):
        calls.append(1)
        if hang and len(calls) == 3:  # in round 2, after rounds 0-1 saved
            open(os.path.join(directory, "HANGING"), "w").close()
            time.sleep(600)
        return fit_fn(model)

    result = kl.lottery_search(make_model(seed=int(sys.argv[3])), fit,
                               rounds=3, rate=0.5, directory=directory,
                               seed=0, verbose=1)
    out = {"rounds": [r.metrics for r in result.rounds],
           "masks": {k: v.tolist() for k, v in kl.get_masks(
               result.ticket(3)).items()}}
    with open(os.path.join(directory, "out.json"), "w") as f:
        json.dump(out, f)
    """
)


def test_search_killed_mid_round_resumes_to_the_uninterrupted_result(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(_RESUME_SCRIPT)
    env = {
        **os.environ,
        # the package, conftest (tests/) and this module (tests/search/)
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "TESTS_DIR": str(Path(__file__).resolve().parent),
    }

    def run(directory, mode, seed):
        return subprocess.Popen(
            [sys.executable, str(script), str(directory), mode, str(seed)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )

    killed = tmp_path / "killed"
    proc = run(killed, "hang", 0)
    deadline = time.time() + 240
    while not (killed / "HANGING").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, "the search never reached round 2"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sorted(p.name for p in killed.glob("round_*.json")) == [
        "round_000.json", "round_001.json"
    ]
    # Resume with another initial model: the saved state must win.
    resumed = run(killed, "run", 99)
    output = resumed.communicate(timeout=240)[0]
    assert resumed.returncode == 0, output
    assert "resuming" in output
    reference = tmp_path / "reference"
    straight = run(reference, "run", 0)
    output = straight.communicate(timeout=240)[0]
    assert straight.returncode == 0, output
    a = json.loads((killed / "out.json").read_text())
    b = json.loads((reference / "out.json").read_text())
    assert a["masks"] == b["masks"]
    assert a["rounds"] == b["rounds"]


def test_cli_report_prints_the_table_and_writes_the_plot(tmp_path, capsys):
    from keras_lottery.apps.cli import main

    kl.lottery_search(make_model(), fit_fn, rounds=1, directory=tmp_path, verbose=0)
    assert main(["report", str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "% left" in out and "val_accuracy" in out
    assert out.count("\n    0  100.00") == 1
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "t.csv").read_text().startswith("round,")
    assert main(["report", str(tmp_path / "missing")]) == 1
