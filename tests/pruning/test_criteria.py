"""Pruning engine: exact counts, scopes, output rate, ties, controls, errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import BACKEND, ROOT, mlp

import keras_lottery as kl
from keras_lottery.core.copy import copy_model
from keras_lottery.pruning.report import pruned_count


def lenet():
    return kl.wrap(mlp((784, 300, 100, 10)))


def counts(model):
    return {k: int(v.sum()) for k, v in kl.get_masks(model).items()}


def test_layer_scope_exact_counts_and_output_half_rate():
    model = kl.wrap(mlp((10, 20, 30, 5)))
    report = kl.prune(model, rate=0.2)
    assert counts(model) == {
        "dense/kernel": 200 - 40,
        "dense_1/kernel": 600 - 120,
        "dense_2/kernel": 150 - pruned_count(0.1, 150),
    }
    rows = {w.name: w for w in report.weights}
    assert rows["dense_2/kernel"].pool == "output"
    assert rows["dense_2/kernel"].rate == pytest.approx(0.1)
    assert "Total" in str(report)
    assert report.to_dict()["after"] == sum(counts(model).values())


def test_magnitude_prunes_the_smallest_weights_of_each_layer(rng):
    model = kl.wrap(mlp((6, 8, 3)))
    kernel = rng.normal(size=(6, 8)).astype("float32")
    model.layers[0].layer.kernel.assign(kernel)
    kl.prune(model, rate=0.25)
    mask = kl.get_masks(model)["dense/kernel"]
    threshold = np.sort(np.abs(kernel).ravel())[12]
    np.testing.assert_array_equal(mask, (np.abs(kernel) >= threshold).astype("float32"))


def test_global_scope_uses_one_threshold_across_layers(rng):
    model = kl.wrap(mlp((4, 6, 6, 2)))
    kernels = [rng.normal(size=(4, 6)) * 0.1, rng.normal(size=(6, 6)) * 2.0]
    for layer, kernel in zip(model.layers[:2], kernels):
        layer.layer.kernel.assign(kernel.astype("float32"))
    kl.prune(model, rate=0.5, scope="global", min_remaining=0)
    masks = kl.get_masks(model)
    pool = np.concatenate([np.abs(k.astype("float32")).ravel() for k in kernels])
    threshold = np.sort(pool)[pool.size // 2]
    for name, kernel in zip(["dense/kernel", "dense_1/kernel"], kernels):
        expected = np.abs(kernel.astype("float32")) >= threshold
        np.testing.assert_array_equal(masks[name], expected.astype("float32"))
    # The small-magnitude first layer loses far more than half its weights.
    assert masks["dense/kernel"].sum() < 12
    # The output layer is its own pool at rate / 2.
    assert masks["dense_2/kernel"].sum() == 12 - pruned_count(0.25, 12)


def test_global_scope_min_remaining_keeps_every_layer_alive(rng):
    model = kl.wrap(mlp((4, 6, 6, 2)))
    model.layers[0].layer.kernel.assign(np.full((4, 6), 1e-6, "float32"))
    kl.prune(model, rate=0.9, scope="global", min_remaining=3)
    assert kl.get_masks(model)["dense/kernel"].sum() == 3


def test_ties_are_broken_by_position():
    model = kl.wrap(mlp((2, 4, 2)))
    model.layers[0].layer.kernel.assign(np.ones((2, 4), "float32"))
    kl.prune(model, rate=0.5)
    np.testing.assert_array_equal(
        kl.get_masks(model)["dense/kernel"],
        np.array([[0, 0, 0, 0], [1, 1, 1, 1]], "float32"),
    )


def test_masks_only_ever_lose_ones():
    model = kl.wrap(mlp((8, 16, 4)))
    previous = kl.get_masks(model)
    for i in range(5):
        # Scramble the raw weights so that magnitudes would favour revival.
        for layer in model.layers:
            raw = layer.layer.kernel
            raw.assign(np.random.default_rng(i).normal(size=raw.shape) * 10)
        kl.prune(model, rate=0.3)
        current = kl.get_masks(model)
        for key in current:
            assert np.all(current[key] <= previous[key])
        previous = current


def test_lenet_18_rounds_match_the_paper_fractions():
    model = lenet()
    totals = {k: v.size for k, v in kl.get_masks(model).items()}
    paper = {3: 51.3, 7: 21.1, 12: 7.0, 15: 3.6, 18: 1.9}
    for r in range(1, 19):
        kl.prune(model, rate=0.2)
        if r in paper:
            now = counts(model)
            for key, n in totals.items():
                rate = 0.1 if key == "dense_2/kernel" else 0.2
                # Exactly the documented rule, applied round after round...
                expected = n
                for _ in range(r):
                    expected -= pruned_count(rate, expected)
                assert now[key] == expected, (r, key)
                # ...which stays within about one weight of n * (1 - rate)^r
                # (per-round rounding: 149 vs 150.09 for the output layer
                # after 18 rounds, the largest gap on LeNet).
                assert abs(now[key] - n * (1 - rate) ** r) < 1.1, (r, key)
            percent = 100 * sum(now.values()) / sum(totals.values())
            assert round(percent, 1) == paper[r]


def test_random_criterion_has_magnitude_counts_and_is_seeded():
    a, b = lenet(), lenet()
    kl.prune(a, 0.5, criterion="random", seed=3)
    kl.prune(b, 0.5, criterion="random", seed=3)
    c = lenet()
    kl.prune(c, 0.5)
    assert list(counts(a).values()) == list(counts(c).values())
    for mask_a, mask_b in zip(kl.get_masks(a).values(), kl.get_masks(b).values()):
        np.testing.assert_array_equal(mask_a, mask_b)


def test_callable_criterion_and_bad_scores():
    model = kl.wrap(mlp((2, 4, 2)))
    keep_last_column = lambda w, name: np.tile(np.arange(w.shape[-1]), (w.shape[0], 1))  # noqa: E731
    kl.prune(model, 0.5, criterion=keep_last_column, output_rate=0.5)
    assert kl.get_masks(model)["dense/kernel"][:, 2:].all()
    with pytest.raises(ValueError, match="one score per weight"):
        kl.prune(model, 0.5, criterion=lambda w, n: np.zeros(3))


def test_rates_override_by_type_and_by_name():
    model = kl.wrap(mlp((10, 10, 10, 10)))
    kl.prune(model, 0.2, rates={"Dense": 0.5, "dense_1": 0.1})
    assert counts(model) == {
        "dense/kernel": 50,
        "dense_1/kernel": 90,
        "dense_2/kernel": 50,
    }


def test_groups_prune_collectively_at_their_rate(rng):
    model = kl.wrap(mlp((4, 4, 4, 2)))
    model.layers[0].layer.kernel.assign(np.full((4, 4), 0.01, "float32"))
    model.layers[1].layer.kernel.assign(np.full((4, 4), 5.0, "float32"))
    report = kl.prune(model, 0.2, groups=[kl.Group(["dense", "dense_1"], rate=0.25)])
    c = counts(model)
    assert c["dense/kernel"] == 16 - 8 and c["dense_1/kernel"] == 16
    assert {w.pool for w in report.weights[:2]} == {"group0"}
    with pytest.raises(ValueError, match="two groups"):
        kl.prune(model, 0.2, groups=[["dense"], ["dense", "dense_1"]])
    with pytest.raises(ValueError, match="matches no wrapped layer"):
        kl.prune(model, 0.2, groups=[["nope"]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rate": 1.0}, "must be in \\[0, 1\\)"),
        ({"rate": -0.1}, "must be in \\[0, 1\\)"),
        ({"rate": float("nan")}, "must be in \\[0, 1\\)"),
        ({"scope": "model"}, "scope"),
        ({"criterion": "gradient"}, "criterion"),
        ({"granularity": "row"}, "granularity"),
        ({"rates": {"Conv2D": 0.1}}, "matches no wrapped layer"),
        ({"min_remaining": -1}, "min_remaining"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    model = kl.wrap(mlp())
    kwargs = {"rate": 0.2, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        kl.prune(model, **kwargs)


def test_nan_weights_are_refused_and_name_the_layer():
    model = kl.wrap(mlp())
    kernel = np.ones((8, 16), "float32")
    kernel[0, 0] = np.nan
    model.layers[0].layer.kernel.assign(kernel)
    before = kl.get_masks(model)
    with pytest.raises(ValueError, match="dense/kernel"):
        kl.prune(model)
    for key, mask in kl.get_masks(model).items():
        np.testing.assert_array_equal(mask, before[key])


def test_model_without_wrappers_is_a_clear_error():
    with pytest.raises(ValueError, match="wrap"):
        kl.prune(mlp())


def test_get_set_masks_transfer_a_ticket():
    a = kl.wrap(mlp())
    kl.prune(a, 0.6)
    same_names = copy_model(a)
    kl.set_masks(same_names, {k: np.ones_like(v) for k, v in kl.get_masks(a).items()})
    kl.set_masks(same_names, kl.get_masks(a))
    other_names = kl.wrap(mlp())
    with pytest.raises(ValueError, match="by='order'"):
        kl.set_masks(other_names, kl.get_masks(a))
    kl.set_masks(other_names, kl.get_masks(a), by="order")
    for target in (same_names, other_names):
        for got, want in zip(kl.get_masks(target).values(), kl.get_masks(a).values()):
            np.testing.assert_array_equal(got, want)


def test_set_masks_errors_change_nothing():
    model = kl.wrap(mlp())
    masks = kl.get_masks(model)
    with pytest.raises(ValueError, match="names no prunable weight"):
        kl.set_masks(model, {**masks, "nope/kernel": np.ones(2)})
    with pytest.raises(ValueError, match="shape"):
        kl.set_masks(model, {**masks, "dense/kernel": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="lacks"):
        kl.set_masks(model, {"dense/kernel": np.zeros((8, 16))})
    with pytest.raises(ValueError, match="only 0 and 1"):
        kl.set_masks(model, {**masks, "dense/kernel": np.full((8, 16), 0.5)})
    assert all(m.all() for m in kl.get_masks(model).values())
    kl.set_masks(model, {"dense/kernel": np.zeros((8, 16))}, strict=False)
    assert kl.get_masks(model)["dense/kernel"].sum() == 0


def test_shuffle_masks_keeps_per_layer_sparsity():
    model = kl.wrap(mlp((20, 20, 20)))
    kl.prune(model, 0.5)
    before = kl.get_masks(model)
    kl.shuffle_masks(model, seed=0)
    after = kl.get_masks(model)
    for key in before:
        assert after[key].sum() == before[key].sum()
        assert not np.array_equal(after[key], before[key])


_MASK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    if os.environ["KERAS_BACKEND"] == "torch":
        import torch  # noqa: F401
    import numpy as np, keras, keras_lottery as kl
    model = kl.wrap(keras.Sequential([keras.Input((30,)),
        keras.layers.Dense(20), keras.layers.Dense(5)]))
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    for r in range(3):
        kl.prune(model, 0.3, scope="global" if r % 2 else "layer")
    kl.prune(model, 0.3, criterion="random", seed=5)
    np.savez(sys.argv[1], **kl.get_masks(model))
    """
)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="spawns all three backends once")
def test_same_weights_and_seed_give_identical_masks_on_every_backend(tmp_path):
    script = tmp_path / "masks.py"
    script.write_text(_MASK_SCRIPT)
    outputs = {}
    for backend in ("tensorflow", "jax", "torch"):
        out = tmp_path / f"{backend}.npz"
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [sys.executable, str(script), str(out)], env=env, check=True,
            capture_output=True, timeout=300,
        )
        outputs[backend] = dict(np.load(out))
    reference = outputs["tensorflow"]
    for backend in ("jax", "torch"):
        assert outputs[backend].keys() == reference.keys()
        for key in reference:
            np.testing.assert_array_equal(outputs[backend][key], reference[key])
    assert sorted(reference) == ["dense/kernel", "dense_1/kernel"]
    # Pruning happened: the masks are not all ones.
    assert not math.isclose(reference["dense/kernel"].mean(), 1.0)


def test_sparsity_mode_prunes_every_pool_to_the_target():
    model = kl.wrap(mlp((10, 20, 30, 5)))
    kl.prune(model, sparsity=0.5)
    assert counts(model) == {"dense/kernel": 100, "dense_1/kernel": 300,
                             "dense_2/kernel": 75}
    kl.prune(model, sparsity=0.3)  # already sparser: nothing changes
    assert counts(model)["dense/kernel"] == 100
    report = kl.prune(model, sparsity=0.9, scope="global")
    assert report.after == pytest.approx(0.1 * 950, abs=1)
    with pytest.raises(ValueError, match="rate mode"):
        kl.prune(model, sparsity=0.95, output_rate=0.1)


# ------------------------------------------------------------------ names
def named_mlp():
    """Dense layers named fc1, fc2 and out (wrappers prunable_<name>)."""
    import keras

    return kl.wrap(keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8, name="fc1"),
        keras.layers.Dense(8, name="fc2"), keras.layers.Dense(2, name="out"),
    ]))


def test_groups_take_every_name_of_a_layer_and_classes(rng):
    model = named_mlp()
    report = kl.prune(model, 0.5, groups=[["prunable_fc1", "fc2"]])
    pools = {w.name: w.pool for w in report.weights}
    assert pools == {"fc1/kernel": "group0", "fc2/kernel": "group0",
                     "out/kernel": "output"}
    import keras

    report = kl.prune(named_mlp(), 0.5, groups=[kl.Group(keras.layers.Dense)])
    assert {w.pool for w in report.weights} == {"group0"}
    with pytest.raises(ValueError, match="two groups"):
        kl.prune(named_mlp(), 0.5, groups=[["fc1"], ["prunable_fc1"]])


def test_set_masks_takes_every_name_of_a_layer():
    model = named_mlp()
    zeros = np.zeros((6, 8), "float32")
    for key in ("prunable_fc1", "fc1", "prunable_fc1/kernel", "fc1/kernel"):
        kl.set_masks(model, {key: np.ones((6, 8))}, strict=False)
        kl.set_masks(model, {key: zeros}, strict=False)
        assert kl.get_masks(model)["fc1/kernel"].sum() == 0, key
    with pytest.raises(ValueError, match="twice"):
        kl.set_masks(model, {"fc1": zeros, "prunable_fc1/kernel": zeros},
                     strict=False)
    with pytest.raises(ValueError, match="names no prunable weight"):
        kl.set_masks(model, {"fc3": zeros}, strict=False)


def test_one_mask_check_with_one_message():
    model = named_mlp()
    with pytest.raises(ValueError, match=r"Received: mask with shape \(2, 2\)"):
        kl.set_masks(model, {"fc1": np.zeros((2, 2))}, strict=False)
    with pytest.raises(ValueError, match=r"Received values such as \[0.5"):
        kl.set_masks(model, {"fc1": np.full((6, 8), 0.5)}, strict=False)


# ------------------------------------------------------ one min_remaining
@pytest.mark.parametrize("options", [
    {}, {"scope": "global"}, {"min_remaining": 0}, {"min_remaining": 0.25},
    {"granularity": "channel"},
])
def test_prune_sparsity_and_prune_to_sparsity_give_the_same_masks(options):
    a = kl.wrap(mlp((4, 8, 2)))
    b = kl.wrap(mlp((4, 8, 2)))
    b.set_weights(a.get_weights())
    for target in (0.5, 0.99):
        kl.prune(a, sparsity=target, **options)
        kl.prune_to_sparsity(b, target, **options)
        masks_b = list(kl.get_masks(b).values())
        for mask, other in zip(kl.get_masks(a).values(), masks_b, strict=True):
            np.testing.assert_array_equal(other, mask)


def test_min_remaining_default_keeps_one_weight_in_both_modes():
    model = kl.wrap(mlp((4, 8, 2)))
    kl.prune_to_sparsity(model, 0.99)
    assert [int(m.sum()) for m in kl.get_masks(model).values()] == [1, 1]
    with pytest.warns(UserWarning, match="cuts every path"):
        kl.prune_to_sparsity(model, 0.99, min_remaining=0)
    assert [int(m.sum()) for m in kl.get_masks(model).values()] == [0, 0]


# ---------------------------------------------------------------- options
@pytest.mark.parametrize("options", [
    {"scope": "model"}, {"criterion": "gradient"}, {"granularity": "row"},
    {"granularity": "block", "block_shape": (0, 1)}, {"norm": "l3"},
    {"min_remaining": -1}, {"seed": -3}, {"output_rate": 1.5},
    {"rates": {"Dense": 2.0}}, {"groups": "fc1"},
])
def test_every_entry_point_gives_the_same_message_for_a_mistake(options):
    def message(fn):
        with pytest.raises((ValueError, TypeError)) as error:
            fn()
        return str(error.value)

    expected = message(lambda: kl.prune(kl.wrap(mlp()), 0.2, **options))
    assert "Received" in expected
    assert message(lambda: kl.LotterySchedule(0.2, **options)) == expected
    if "output_rate" not in options and "rates" not in options:
        assert message(lambda: kl.prune_to_sparsity(kl.wrap(mlp()), 0.5,
                                                     **options)) == expected
        assert message(lambda: kl.GradualPruning(
            kl.ConstantSparsity(0.5, 0), **options)) == expected


def test_unknown_prune_option_fails_at_construction():
    with pytest.raises(TypeError, match=r"LotterySchedule got unexpected.*scop"):
        kl.LotterySchedule(0.2, scop="global")
    with pytest.raises(TypeError, match="GradualPruning got unexpected"):
        kl.GradualPruning(kl.ConstantSparsity(0.5, 0), rate=0.2)
    with pytest.raises(ValueError, match="rate mode"):
        kl.GradualPruning(kl.ConstantSparsity(0.5, 0), rates={"fc": 0.1})


def test_a_registered_criterion_is_one_function():
    from keras_lottery.pruning.scores import CRITERIA, register_criterion

    @register_criterion("inverse")
    def inverse(weight, rng):
        return -np.abs(weight)

    try:
        model = kl.wrap(mlp((4, 4)))
        kernel = np.arange(16, dtype="float32").reshape(4, 4)
        model.layers[0].layer.kernel.assign(kernel)
        kl.prune(model, 0.5, output_rate=0.5, criterion="inverse")
        mask = kl.get_masks(model)["dense/kernel"]
        assert mask.ravel().tolist() == [1.0] * 8 + [0.0] * 8
        kl.LotterySchedule(0.2, criterion="inverse")  # accepted everywhere
    finally:
        del CRITERIA["inverse"]


def test_magnitude_subclasses_score_through_the_one_hook(monkeypatch):
    """`prune` calls `Criterion.score_raw` for every criterion: a subclass
    of Magnitude keeps Magnitude's fast passes (which never call `score`),
    one that overrides `score` is scored by it, as any other criterion."""
    from keras_lottery.pruning.prune import planned_masks
    from keras_lottery.pruning.scores import Magnitude

    class Plain(Magnitude):
        pass

    class Squared(Magnitude):  # the same ranking as |w|, through `score`
        def score(self, weights, context):
            calls.append(sorted(weights))
            return {k: np.square(w) for k, w in weights.items()}

    calls = []
    model = lenet()
    kl.prune(model, 0.5)  # pruned entries in every weight
    expected = planned_masks(model, 0.3)

    def no_score(self, weights, context):
        raise AssertionError("Magnitude's fast passes never call score")

    monkeypatch.setattr(Magnitude, "score", no_score)
    for criterion in ("magnitude", Plain(), Plain, Squared()):
        got = planned_masks(model, 0.3, criterion=criterion)
        for key, mask in expected.items():
            np.testing.assert_array_equal(got[key], mask, err_msg=str(criterion))
    assert calls == [sorted(expected)]


def test_every_criterion_refuses_a_kept_nan_and_ignores_a_pruned_one():
    """The default hook and Magnitude's share one finiteness check (one
    message); the default hands `score` the weights with pruned entries
    zeroed, and neither writes into the variables (torch on CPU hands out
    their memory)."""
    from keras_lottery.core.model import iter_weight_keys, require_wrappers
    from keras_lottery.core.state import host_array
    from keras_lottery.pruning.pools import host_masks
    from keras_lottery.pruning.scores import (
        Criterion,
        ScoreContext,
        get_criterion,
        score_weights,
    )

    seen = {}

    class Spy(Criterion):
        def score(self, weights, context):
            seen.update({k: w.copy() for k, w in weights.items()})
            return {k: np.abs(w) for k, w in weights.items()}

    model = kl.wrap(mlp((4, 6, 2)))
    kl.prune(model, 0.5)
    entries = list(iter_weight_keys(require_wrappers(model)))
    masks = host_masks(entries)
    before = {k: np.array(host_array(w.prunable_variable(n)))
              for k, w, n in entries}
    criteria = ("magnitude", "random", Spy())
    for criterion in criteria:
        for float64 in (True, False):
            scores = score_weights(entries, masks, criterion, 0, model,
                                   float64=float64)
            for key, wrapper, name in entries:
                np.testing.assert_array_equal(
                    host_array(wrapper.prunable_variable(name)), before[key])
                assert scores[key].dtype == np.float64 or not float64
    # The hook itself, on host arrays a user's assign may leave: NaN where
    # pruned is no obstacle, NaN or inf where kept is refused.
    key = entries[0][0]
    raw = before[key].copy()
    pruned, kept = np.flatnonzero(~masks[key])[0], np.flatnonzero(masks[key])[0]
    raw.flat[pruned] = np.nan
    context = ScoreContext(model, {}, {key: masks[key]}, np.random.default_rng(0))
    for criterion in criteria:
        for float64 in (True, False):
            scores = get_criterion(criterion).score_raw(
                {key: raw.copy()}, context, float64=float64)
            assert np.isfinite(scores[key][masks[key]]).all()
    assert seen[key].flat[pruned] == 0 and not seen[key][~masks[key]].any()
    np.testing.assert_array_equal(seen[key][masks[key]], raw[masks[key]])
    raw.flat[kept] = np.inf
    for criterion in criteria:
        with pytest.raises(ValueError, match=(
                rf"Weight '{key}' holds NaN or infinite values.*refusing")):
            get_criterion(criterion).score_raw({key: raw.copy()}, context)
