"""Instability analysis (linear mode connectivity): instability,
instability_sweep, the records and recompute_batchnorm."""

from __future__ import annotations

import importlib.util
import json
import re

import keras
import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery.core.model import wrappers
from keras_lottery.search.interpolation import recompute_batchnorm

RNG = np.random.default_rng(0)
X = RNG.normal(size=(96, 6)).astype("float32")
Y = (X[:, :3].sum(axis=1) > X[:, 3:].sum(axis=1)).astype("int32")


def mlp(batchnorm=False):
    layers = [keras.Input((6,)), keras.layers.Dense(16, name="fc")]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers += [keras.layers.ReLU(), keras.layers.Dense(2, name="out")]
    model = kl.wrap(keras.Sequential(layers))
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def fit(model, callbacks=None):
    return model.fit(X, Y, epochs=2, batch_size=16, verbose=0,
                     callbacks=callbacks)


def evaluate(model):
    """Accuracy and loss from one eager call (no compiled evaluate)."""
    logits = keras.ops.convert_to_numpy(model(X, training=False)).astype("float64")
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return {"accuracy": float(np.mean(logits.argmax(axis=1) == Y)),
            "loss": float(-log_p[np.arange(len(Y)), Y].mean())}


def test_same_seed_gives_zero_barrier_with_batchnorm_recomputed():
    model = mlp(batchnorm=True)
    with pytest.raises(ValueError, match="bn_data"):
        kl.instability(model, fit, eval_fn=evaluate)
    seeds = []

    def seeded_fit(model, seed=None):
        seeds.append(seed)
        return fit(model)

    result = kl.instability(model, seeded_fit, eval_fn=evaluate, seeds=(3, 3),
                            points=4, bn_data=X[:48], batch_size=48)
    assert seeds == [3, 3]
    assert result.bn_recomputed
    assert result.alphas == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert result.barrier == pytest.approx(0.0, abs=1e-6)
    losses = [m["loss"] for m in result.metrics]
    assert losses == pytest.approx([losses[0]] * 4, rel=1e-4)
    assert result.end_metrics[0] == pytest.approx(result.end_metrics[1], rel=1e-5)


def test_end_points_are_the_trained_copies_and_masks_stay_fixed():
    model = mlp(batchnorm=True)
    kl.prune(model, 0.5)
    before = kl.get_masks(model)
    weights = model.get_weights()
    seen = []

    def checked_eval(m):
        masks = kl.get_masks(m)
        for key, mask in masks.items():
            np.testing.assert_array_equal(mask, before[key])
        for key, w in wrappers(m).items():
            kernel = keras.ops.convert_to_numpy(w.layer.kernel)
            assert np.all(kernel[before[f"{key}/kernel"] == 0] == 0.0)
        seen.append(1)
        return evaluate(m)

    # bn_data=False: the statistics are interpolated as they are, so the
    # end points are exactly the trained copies.
    result = kl.instability(model, fit, eval_fn=checked_eval, seeds=(0, 1),
                            points=5, bn_data=False)
    assert not result.bn_recomputed
    assert len(seen) == 2 + 5  # the two copies, then every point
    assert result.metrics[0] == pytest.approx(result.end_metrics[0], rel=1e-5)
    assert result.metrics[-1] == pytest.approx(result.end_metrics[1], rel=1e-5)
    ends = (result.errors[0] + result.errors[-1]) / 2
    assert result.barrier == pytest.approx(max(result.errors) - ends)
    assert result.errors[0] == pytest.approx(
        1 - result.end_metrics[0]["accuracy"])
    kept = sum(int(m.sum()) for m in before.values())
    assert result.remaining == pytest.approx(
        kept / sum(m.size for m in before.values()))
    # The copies differ (different seeds), the model is left as it was.
    assert result.end_metrics[0]["loss"] != result.end_metrics[1]["loss"]
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    again = kl.Instability.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result


def test_recompute_batchnorm_averages_the_batch_statistics():
    model = keras.Sequential([keras.Input((2,)),
                              keras.layers.BatchNormalization()])
    data = np.array([[0.0, 0.0], [2.0, 4.0], [4.0, 4.0], [6.0, 8.0]], "float32")
    assert recompute_batchnorm(model, data, batch_size=2) == 1
    bn = model.layers[0]
    mean = keras.ops.convert_to_numpy(bn.moving_mean)
    var = keras.ops.convert_to_numpy(bn.moving_variance)
    # Batch means (1, 2) and (5, 6); batch variances (1, 4) and (1, 4).
    np.testing.assert_allclose(mean, [3.0, 4.0], rtol=1e-5)
    np.testing.assert_allclose(var, [1.0, 4.0], rtol=1e-4)
    assert bn.momentum == 0.99  # restored
    batches = [(data[:2], None), (data[2:], None)]
    recompute_batchnorm(model, batches)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean),
                               [3.0, 4.0], rtol=1e-5)


def test_sweep_over_rewind_steps_reports_the_first_stable_one(tmp_path):
    model = mlp()
    sweep = kl.instability_sweep(model, fit, eval_fn=evaluate,
                                 steps=(0, 4), seeds=(0, 0), points=3)
    assert [r.rewind_to for r in sweep.results] == [0, 4]
    assert sweep.first_stable == 0  # equal seeds: no barrier
    # Step 4 has trained 4 steps more, so its copies end elsewhere.
    assert sweep.results[0].end_metrics != sweep.results[1].end_metrics
    assert "barrier %" in sweep.table()
    never = kl.InstabilitySweep(sweep.results, threshold=1e-9)
    never.results = [kl.Instability.from_dict({**r.to_dict(), "barrier": 0.5})
                     for r in sweep.results]
    assert never.first_stable is None
    if importlib.util.find_spec("matplotlib") is not None:
        for path in (sweep.plot(tmp_path / "sweep.png"),
                     sweep.results[1].plot(tmp_path / "one.png")):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with pytest.raises(ValueError, match=r"\.png"):
            sweep.plot(tmp_path / "sweep.pdf")


def test_bad_arguments_are_clear_errors():
    model = mlp()
    with pytest.raises(ValueError, match="callbacks"):
        kl.instability(model, lambda m: fit(m), eval_fn=evaluate, rewind_to=5)
    with pytest.raises(ValueError, match="seeds"):
        kl.instability(model, fit, eval_fn=evaluate, seeds=(0,))
    with pytest.raises(ValueError, match="points"):
        kl.instability(model, fit, eval_fn=evaluate, points=1)
    with pytest.raises(ValueError, match="rewind_to"):
        kl.instability(model, fit, eval_fn=evaluate, rewind_to=-1)
    with pytest.raises(TypeError, match="eval_fn"):
        kl.instability(model, fit, eval_fn=None)
    with pytest.raises(ValueError, match="before"):
        kl.instability(model, fit, eval_fn=evaluate, rewind_to=10_000)
    with pytest.raises(KeyError, match="metric="):
        kl.instability(model, fit, eval_fn=evaluate, metric="auc", points=2)
    with pytest.raises(TypeError, match="unexpected"):
        kl.instability_sweep(model, fit, eval_fn=evaluate, rewind_to=0)


def test_rewind_targets_are_checked_by_one_function_with_each_message():
    """instability rewinds somewhere ('checkpoint' yes, None no); a prune
    step may not rewind at all (None yes, 'checkpoint' no)."""
    model = mlp()
    mine = (r"^`rewind_to` must be 'init' \(theta_0\), 'checkpoint' \(the "
            r"model's late-rewinding point\) or a training step k >= 0\. "
            r"Received: rewind_to=")
    for bad in (None, -1, True, "late", 1.5):
        with pytest.raises(ValueError, match=mine + re.escape(repr(bad)) + "$"):
            kl.instability(model, fit, eval_fn=evaluate, rewind_to=bad)
        with pytest.raises(ValueError, match=mine):
            kl.instability_sweep(model, fit, eval_fn=evaluate, steps=(0, bad))
    cycle = (r"^`rewind_to` must be 'init' \(theta_0\), a training step k >= "
             r"0 \(late rewinding\), or None \(no rewinding: train, prune, "
             r"fine-tune\)\. Received: rewind_to='checkpoint'$")
    with pytest.raises(ValueError, match=cycle):
        kl.LotterySchedule(0.2, rewind_to="checkpoint")
    with pytest.raises(ValueError, match=cycle):
        kl.lottery_search(model, fit, rounds=1, rewind_to="checkpoint")
    assert kl.LotterySchedule(0.2, rewind_to=None).rewind_to is None
