"""Pruning at initialization: SNIP, GraSP, SynFlow, prune_highest, signs.

Scores are checked against hand computations on a 2-layer linear model
(gradient and Hessian-vector product in closed form), SynFlow against the
paper's conservation law, and every criterion against `prune`'s counts.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import mlp

import keras_lottery as kl
from keras_lottery.core.model import iter_weight_keys, require_wrappers
from keras_lottery.pruning.criteria import SNIP, GraSP, SynFlow
from keras_lottery.pruning.masks import randomize_signs
from keras_lottery.pruning.prune import planned_masks
from keras_lottery.pruning.scores import (
    CRITERIA,
    Criterion,
    register_criterion,
    score_weights,
)


def linear2(rng, n_in=5, hidden=4, n_out=3):
    """x -> x W1 -> (x W1) W2, no biases, with random float32 weights."""
    model = kl.wrap(keras.Sequential([
        keras.Input((n_in,)),
        keras.layers.Dense(hidden, use_bias=False, name="a"),
        keras.layers.Dense(n_out, use_bias=False, name="b"),
    ]))
    w1 = rng.normal(size=(n_in, hidden)).astype("float32")
    w2 = rng.normal(size=(hidden, n_out)).astype("float32")
    model.layers[0].layer.kernel.assign(w1)
    model.layers[1].layer.kernel.assign(w2)
    return model, w1.astype("float64"), w2.astype("float64")


def scores_of(model, criterion, seed=0):
    entries = list(iter_weight_keys(require_wrappers(model)))
    masks = {key: w.get_mask(name) for key, w, name in entries}
    return score_weights(entries, masks, criterion, seed, model)


def mse_parts(x, y, w1, w2):
    """Gradient of mean((x W1 W2 - y)^2) and its product with the Hessian
    along the gradient itself, in closed form."""
    n = y.size
    h = x @ w1
    r = h @ w2 - y
    g1 = 2 / n * x.T @ r @ w2.T
    g2 = 2 / n * h.T @ r
    dr = x @ g1 @ w2 + h @ g2  # directional derivative of r along g
    hg1 = 2 / n * x.T @ (dr @ w2.T + r @ g2.T)
    hg2 = 2 / n * ((x @ g1).T @ r + h.T @ dr)
    return (g1, g2), (hg1, hg2)


@pytest.fixture
def batch(rng):
    x = rng.normal(size=(6, 5)).astype("float32")
    y = rng.normal(size=(6, 3)).astype("float32")
    return x, y


def test_snip_scores_are_abs_gradient_times_weight(rng, batch):
    model, w1, w2 = linear2(rng)
    (g1, g2), _ = mse_parts(*map(np.float64, batch), w1, w2)
    scores = scores_of(model, SNIP(data=batch, loss="mse"))
    np.testing.assert_allclose(scores["a/kernel"], np.abs(g1 * w1), rtol=1e-4)
    np.testing.assert_allclose(scores["b/kernel"], np.abs(g2 * w2), rtol=1e-4)
    # Two batches: the gradient is their mean.
    half = (batch[0][:3], batch[1][:3]), (batch[0][3:], batch[1][3:])
    two = scores_of(model, SNIP(data=list(half), loss="mse"))
    np.testing.assert_allclose(two["a/kernel"], scores["a/kernel"], rtol=1e-4)


def test_grasp_scores_are_w_times_hg_and_remove_the_papers_weights(rng, batch):
    model, w1, w2 = linear2(rng)
    _, (hg1, hg2) = mse_parts(*map(np.float64, batch), w1, w2)
    grasp = GraSP(data=batch, loss="mse")
    scores = scores_of(model, grasp)
    np.testing.assert_allclose(scores["a/kernel"], w1 * hg1, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(scores["b/kernel"], w2 * hg2, rtol=1e-3, atol=1e-6)
    # The paper's S = -w * Hg: the weights with the highest S are removed.
    kl.prune(model, sparsity=0.5, criterion=grasp, min_remaining=0)
    paper_s = (-w1 * hg1).ravel()
    removed = np.flatnonzero(kl.get_masks(model)["a/kernel"].ravel() == 0)
    np.testing.assert_array_equal(np.sort(removed), np.sort(np.argsort(-paper_s)[:10]))


def test_synflow_matches_hand_computation_and_conserves_flow(rng):
    model, w1, w2 = linear2(rng)
    scores = scores_of(model, SynFlow(rounds=1))
    a1, a2 = np.abs(w1), np.abs(w2)
    np.testing.assert_allclose(scores["a/kernel"], a1 * (a2.sum(axis=1))[None, :],
                               rtol=1e-5)
    np.testing.assert_allclose(scores["b/kernel"], a2 * (a1.sum(axis=0))[:, None],
                               rtol=1e-5)
    # Conservation (Tanaka et al. 2020): every layer's scores sum to R, also
    # through ReLUs, for a deeper network without biases.
    deep = kl.wrap(keras.Sequential([keras.Input((12,))] + [
        keras.layers.Dense(n, use_bias=False, activation="relu")
        for n in (16, 10, 8, 4)]))
    totals = [s.sum() for s in scores_of(deep, SynFlow(rounds=1)).values()]
    np.testing.assert_allclose(totals, totals[0], rtol=1e-4)


def test_synflow_scoring_leaves_weights_and_masks_as_they_were(rng):
    model = kl.wrap(mlp((6, 8, 3)))
    kl.prune(model, 0.5)
    weights = model.get_weights()
    planned = planned_masks(model, sparsity=0.9, criterion=SynFlow(rounds=4))
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    for key, mask in kl.get_masks(model).items():
        assert np.all(planned[key] <= mask)  # never revived


@pytest.mark.parametrize("make", [
    lambda b: SNIP(data=b, loss="mse"), lambda b: GraSP(data=b, loss="mse"),
    lambda b: SynFlow(rounds=3),
], ids=["snip", "grasp", "synflow"])
@pytest.mark.parametrize("options", [
    {"sparsity": 0.9, "scope": "global"}, {"rate": 0.5, "granularity": "channel"},
])
def test_counts_are_those_of_magnitude(make, options, batch):
    x, _ = batch
    y = np.zeros((6, 3), "float32")
    data = (np.concatenate([x, x], axis=1)[:, :8], y)

    def counts(**kwargs):
        model = kl.wrap(mlp((8, 16, 3)))
        if "granularity" not in options:  # channels: counts in weights
            kl.prune(model, 0.2)  # from a pruned model: masks are respected
        before = kl.get_masks(model)
        report = kl.prune(model, **options, **kwargs)
        for key, mask in kl.get_masks(model).items():
            assert np.all(mask <= before[key])
        pools: dict = {}  # a pool per weight, or one global pool
        for i, w in enumerate(report.weights):
            pool = w.pool if w.pool == "global" else i
            pools[pool] = pools.get(pool, 0) + w.after
        return pools

    assert counts(criterion=make(data)) == counts()


def test_synflow_is_iterative_with_an_exponential_schedule(rng):
    calls = []

    class Recording(SynFlow):
        def score(self, weights, context):
            calls.append(sum(int(m.sum()) for m in context.masks.values()))
            return super().score(weights, context)

    model = kl.wrap(mlp((10, 20, 5)))
    kl.prune(model, sparsity=0.99, scope="global", min_remaining=0,
             criterion=Recording(rounds=4))
    total = 10 * 20 + 20 * 5
    # Round i scores under the masks of round i - 1: 300, 300*0.01^(1/4), ...
    expected = [total] + [round(total * 0.01 ** (i / 4)) for i in (1, 2, 3)]
    assert all(abs(a - b) <= 1 for a, b in zip(calls, expected)), calls
    assert sum(int(m.sum()) for m in kl.get_masks(model).values()) == 3


def test_prune_highest_inverts_the_ranking_and_reaches_every_entry_point():
    model = kl.wrap(mlp((4, 4)))
    kernel = np.arange(1, 17, dtype="float32").reshape(4, 4)
    model.layers[0].layer.kernel.assign(kernel)
    kl.prune(model, 0.5, output_rate=0.5, prune_highest=True, min_remaining=2)
    mask = kl.get_masks(model)["dense/kernel"].ravel()
    assert mask.tolist() == [1.0] * 8 + [0.0] * 8  # the largest half went
    with pytest.raises(TypeError, match=r"Received: prune_highest='yes'"):
        kl.prune(model, 0.5, prune_highest="yes")
    for make in (lambda: kl.LotterySchedule(0.2, prune_highest="yes"),
                 lambda: kl.GradualPruning(kl.ConstantSparsity(0.5, 0),
                                           prune_highest="yes"),
                 lambda: kl.prune_to_sparsity(kl.wrap(mlp()), 0.5,
                                              prune_highest="yes")):
        with pytest.raises(TypeError, match="prune_highest"):
            make()
    kl.LotterySchedule(0.2, prune_highest=True)  # accepted


def test_prune_highest_keeps_min_remaining_of_the_lowest_and_channels():
    model = kl.wrap(mlp((4, 4, 2)))  # the hidden layer's channels
    kernel = np.arange(1, 17, dtype="float32").reshape(4, 4)
    model.layers[0].layer.kernel.assign(kernel)
    model.layers[1].layer.kernel.assign(np.ones((4, 2), "float32"))
    kl.prune(model, sparsity=0.75, granularity="channel", prune_highest=True)
    mask = kl.get_masks(model)["dense/kernel"]
    assert mask[:, 0].all() and mask[:, 1:].sum() == 0  # the lowest column


def test_randomize_signs_keeps_magnitudes_and_masks():
    model = kl.wrap(mlp((20, 30, 5)))
    kl.prune(model, 0.5)
    masks = kl.get_masks(model)
    kernel = model.layers[0].layer.kernel
    before = keras.ops.convert_to_numpy(kernel)
    bias = keras.ops.convert_to_numpy(model.layers[0].layer.bias)
    randomize_signs(model, seed=1)
    after = keras.ops.convert_to_numpy(kernel)
    np.testing.assert_array_equal(np.abs(after), np.abs(before))
    flipped = (np.sign(after) != np.sign(before))[masks["dense/kernel"] > 0]
    assert 0.35 < flipped.mean() < 0.65
    assert np.all(after[masks["dense/kernel"] == 0] == 0)
    np.testing.assert_array_equal(bias, keras.ops.convert_to_numpy(
        model.layers[0].layer.bias))
    for key, mask in kl.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[key])
    randomize_signs(model, seed=1)  # the same seed: the same signs
    np.testing.assert_array_equal(
        np.sign(keras.ops.convert_to_numpy(kernel)), np.sign(after))


def test_a_criterion_object_of_ones_own_by_name_everywhere():
    @register_criterion("row_index")
    class RowIndex(Criterion):
        def score(self, weights, context):
            return {k: np.indices(w.shape)[0].astype(float)
                    for k, w in weights.items()}

    try:
        model = kl.wrap(mlp((4, 4)))
        report = kl.prune(model, 0.5, output_rate=0.5, criterion="row_index")
        assert report.criterion == "row_index"
        assert kl.get_masks(model)["dense/kernel"][2:].all()
        kl.LotterySchedule(0.2, criterion="row_index")
        kl.prune(model, 0.5, criterion=RowIndex())
    finally:
        del CRITERIA["row_index"]


@pytest.mark.parametrize("make, error, match", [
    (lambda: SNIP(), ValueError, r"kl.SNIP\(data=\(x, y\)"),
    (lambda: SNIP(data=np.ones((3, 2))), ValueError, r"data=\(x, y\)"),
    (lambda: SNIP(data=[(1, 2, 3)]), ValueError, "Received: data"),
    (lambda: GraSP(data=(np.ones(2), np.ones(2)), loss=3), TypeError, "loss=3"),
    (lambda: SynFlow(rounds=0), ValueError, "rounds=0"),
])
def test_bad_criteria_are_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_uses_are_clear_errors(batch):
    model = kl.wrap(mlp((5, 4, 3)))
    with pytest.raises(ValueError, match="Received: data=None"):
        kl.prune(model, 0.5, criterion="snip")  # needs data: an object
    assert kl.pruning.scores.get_criterion("synflow").rounds == 100
    with pytest.raises(ValueError, match="needs a loss"):
        kl.prune(model, 0.5, criterion=SNIP(data=batch))
    with pytest.raises(ValueError, match="criterion"):
        kl.prune(model, 0.5, criterion=3)

    class Wrong(Criterion):
        def score(self, weights, context):
            return {"nope": 1}

    with pytest.raises(ValueError, match="one score array per weight"):
        kl.prune(model, 0.5, criterion=Wrong())
    assert all(m.all() for m in kl.get_masks(model).values())  # unchanged
