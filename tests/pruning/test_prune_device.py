"""The prune step's selection: exact counts, exact ties, linear cost.

`prune` finds each pool's threshold from a sample and one or two passes
over the tensors, and applies `min_remaining` lazily (`pruning/pools.py`).
These tests hold it to a plain reference written here (one lexicographic
sort of every candidate by score, tensor, position; `min_remaining`
applied up front), on the same weights, on every backend: the same masks
and thresholds, ties included. The sampled path is forced on tiny models
by shrinking the pool size above which it runs.
"""

from __future__ import annotations

import itertools
import warnings

import keras
import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery.core.model import iter_weight_keys, require_wrappers
from keras_lottery.pruning import pools
from keras_lottery.pruning.granularity import get_granularity
from keras_lottery.pruning.report import pruned_count
from keras_lottery.pruning.scores import score_weights


def reference_pool(keys, scores, masks, units, min_remaining, rate, sparsity):
    """New masks and threshold of one pool, the slow and obvious way."""
    rows, per_tensor = [], []
    remaining = total = 0
    for i, key in enumerate(keys):
        unit_scores, alive = units.reduce(scores[key], masks[key], key)
        unit_scores, alive = np.ravel(unit_scores), np.ravel(alive).astype(bool)
        keep = pools.keep_count(min_remaining, alive.size)
        live = np.flatnonzero(alive)
        # The `keep` best alive units; among equal scores the later kept.
        best = live[np.lexsort((live, unit_scores[live]))][::-1][:max(keep, 0)]
        out = np.zeros(alive.size, dtype=bool)
        out[best] = True
        held = units.protect(scores[key], masks[key], key)
        if held is not None:
            out[np.asarray(held, dtype=np.int64)] = True
        for pos in np.flatnonzero(alive & ~out):
            rows.append((unit_scores[pos], i, pos))
        per_tensor.append(alive)
        remaining += int(alive.sum())
        total += alive.size
    if sparsity is None:
        wanted = pruned_count(rate, remaining)
    else:
        wanted = pruned_count(sparsity, total) - (total - remaining)
    k = min(max(wanted, 0), len(rows))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    chosen = rows[:k]
    new = [a.copy() for a in per_tensor]
    for _, i, pos in chosen:
        new[i][pos] = False
    threshold = float(max(r[0] for r in chosen)) if k else None
    return {
        key: units.expand(a, masks[key]) for key, a in zip(keys, new)
    }, threshold


def random_pool(rng, shapes, ties: bool, dead: float):
    scores, masks = {}, {}
    for i, shape in enumerate(shapes):
        s = np.abs(rng.standard_normal(shape)).astype("float32")
        if ties:  # a few distinct values: most units tie with others
            s = np.round(s * 2) / 2
        scores[f"w{i}"] = s
        masks[f"w{i}"] = rng.random(shape) >= dead
    return scores, masks


@pytest.mark.parametrize("sampled", [False, True])
def test_pool_selection_equals_the_reference(sampled, monkeypatch):
    if sampled:  # every pool takes the sampled path, and its guesses miss
        monkeypatch.setattr(pools, "_SMALL_POOL", 4)
        monkeypatch.setattr(pools, "_SAMPLE", 8)
        monkeypatch.setattr(pools, "_CHUNK", 7)  # tensors span many chunks
    rng = np.random.default_rng(0)
    cases = 0
    for trial in range(12):
        shapes = [tuple(int(d) for d in rng.integers(1, 24, 2))
                  for _ in range(int(rng.integers(1, 5)))]
        scores, masks = random_pool(rng, shapes, ties=trial % 2 == 1,
                                    dead=float(rng.random()) * 0.8)
        if trial % 3 == 0:  # one tensor far below the others: global collapse
            scores["w0"] = scores["w0"] * 1e-3
        for gran, min_remaining, (rate, sparsity) in itertools.product(
            ["weight", "channel", "block", "2:4"], [0, 1, 5, 0.3],
            [(0.2, None), (0.9, None), (0.0, None), (0.0, 0.95)],
        ):
            units = get_granularity(gran)
            keys = list(scores)
            expected, t_expected = reference_pool(
                keys, scores, masks, units, min_remaining, rate, sparsity)
            got, t_got = pools.prune_pool(
                keys, scores, masks, units, min_remaining, rate, sparsity)
            assert t_got == t_expected, (gran, min_remaining, rate, sparsity)
            for key in keys:
                np.testing.assert_array_equal(
                    got[key] != 0, expected[key] != 0,
                    err_msg=f"{key} {gran} {min_remaining} {rate} {sparsity}",
                )
            cases += 1
    assert cases == 12 * 4 * 4 * 4


def test_ties_go_to_the_earliest_tensor_then_position():
    scores = {"a": np.ones((2, 3), "float32"), "b": np.ones((2, 3), "float32")}
    masks = {k: np.ones((2, 3), bool) for k in scores}
    got, threshold = pools.prune_pool(
        ["a", "b"], scores, masks, get_granularity("weight"), 0, 0.5, None)
    assert threshold == 1.0
    assert got["a"].tolist() == [[False] * 3, [False] * 3]
    assert got["b"].tolist() == [[True] * 3, [True] * 3]


def conv_model():
    """Conv + Dense model with every weight set from NumPy (same weights on
    every backend) and values repeated, so that many scores tie."""
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(8, 3, name="conv"),
        keras.layers.DepthwiseConv2D(3, name="depthwise"),
        keras.layers.Flatten(),
        keras.layers.Dense(12, name="fc"),
        keras.layers.Dense(3, name="out"),
    ])
    rng = np.random.default_rng(7)
    for layer in model.layers:
        scale = 1e-3 if layer.name == "depthwise" else 1.0  # global collapse
        for v in layer.weights:
            values = np.round(rng.standard_normal(v.shape) * 3) / 3
            v.assign((scale * values).astype("float32"))
    return kl.wrap(model)


def expected_masks(model, rate, sparsity, *, scope, granularity,
                   min_remaining=1, criterion=None):
    """What `prune` must set: the reference, on the model's weights."""
    entries = list(iter_weight_keys(require_wrappers(model)))
    assignment, _ = pools.resolve_pools(
        model, entries, rate, scope, None, None, None,
        separate_outputs=sparsity is None)
    masks = {key: w.get_mask(name) for key, w, name in entries}
    scores = {}
    for key, w, name in entries:
        raw = keras.ops.convert_to_numpy(w.prunable_variable(name))
        raw = np.where(masks[key] != 0, raw, 0).astype(raw.dtype)
        # Scores are float64, as `score_weights` hands them on (block
        # norms summed in float32 would round, and rank, differently).
        scores[key] = np.asarray(
            np.abs(raw) if criterion is None else criterion(raw, key),
            dtype=np.float64)
    units = get_granularity(granularity)
    by_pool: dict[str, list[str]] = {}
    for key, _, _ in entries:
        by_pool.setdefault(assignment[key][0], []).append(key)
    out, thresholds = {}, {}
    for keys in by_pool.values():
        new, threshold = reference_pool(keys, scores, masks, units, min_remaining,
                                        assignment[keys[0]][1], sparsity)
        out.update(new)
        thresholds.update(dict.fromkeys(keys, threshold))
    return out, thresholds


def coarse(weight, name):
    """A criterion with few distinct values: ties everywhere."""
    return np.round(np.abs(weight) * 2)


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("granularity", ["weight", "block"])  # channel: the
# dependency groups of pruning/channel_groups.py, tested in test_granularity
def test_prune_sets_the_reference_masks(scope, granularity, monkeypatch):
    monkeypatch.setattr(pools, "_SMALL_POOL", 16)  # the sampled path
    monkeypatch.setattr(pools, "_SAMPLE", 32)
    model = conv_model()
    steps = [  # from dense to 90% sparse, each step on the last one's masks
        dict(rate=0.3),
        dict(rate=0.5, min_remaining=0.2),
        dict(rate=0.6, criterion=coarse, min_remaining=3),
        dict(rate=0.0, sparsity=0.9, min_remaining=0),
    ]
    for step in steps:
        options = dict(step, scope=scope, granularity=granularity)
        rate, sparsity = options.pop("rate"), options.pop("sparsity", None)
        expected, thresholds = expected_masks(model, rate, sparsity, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # collapse warnings: not tested here
            report = kl.prune(model, rate, sparsity=sparsity, **options)
        got = kl.get_masks(model)
        for key, mask in expected.items():
            np.testing.assert_array_equal(
                got[key], mask != 0, err_msg=f"{step} {key}")
        assert report.after == sum(
            int(np.count_nonzero(m)) for m in expected.values())
        # Magnitudes rank single weights in float32 (`score_weights(...,
        # float64=False)`), blocks in float64: the same thresholds.
        assert {w.name: w.threshold for w in report.weights} == thresholds, step


def test_magnitude_scores_leave_weights_alone_and_skip_pruned_nan():
    """The magnitude path takes |w| in place only in a host copy of its own
    (a torch CPU variable hands out a view of its memory), is not stopped
    by NaN in a pruned entry, and refuses NaN in a kept one."""
    model = conv_model()
    kl.prune(model, 0.5)
    entries = list(iter_weight_keys(require_wrappers(model)))
    masks = pools.host_masks(entries)
    before = [keras.ops.convert_to_numpy(w.prunable_variable(n)).copy()
              for _, w, n in entries]
    for float64 in (True, False):
        scores = score_weights(entries, masks, "magnitude", None, model,
                               float64=float64)
        for (key, w, n), raw in zip(entries, before):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(w.prunable_variable(n)), raw)
            assert scores[key].dtype == (np.float64 if float64 else np.float32)
            np.testing.assert_array_equal(
                scores[key][masks[key]], np.abs(raw)[masks[key]])
            if float64:  # summed into units: pruned entries score 0
                assert not scores[key][~masks[key]].any()
    key, wrapper, name = entries[0]
    raw = before[0].copy()
    raw.flat[np.flatnonzero(~masks[key])[0]] = np.nan
    # Written past the masked assign (a NaN * 0 is NaN on TF and torch,
    # but XLA's fused multiply under JAX gives 0): a pruned entry holding
    # NaN, as a user's own write to the raw buffer could leave it.
    variable = wrapper.prunable_variable(name)
    type(variable).__mro__[1].assign(variable, raw)
    assert np.isnan(keras.ops.convert_to_numpy(wrapper.prunable_variable(name))).any()
    scores = score_weights(entries, masks, "magnitude", None, model,
                           float64=False)
    assert np.isfinite(scores[key][masks[key]]).all()
    raw.flat[np.flatnonzero(masks[key])[0]] = np.inf
    wrapper.prunable_variable(name).assign(raw)
    with pytest.raises(ValueError, match="NaN or infinite"):
        score_weights(entries, masks, "magnitude", None, model, float64=False)
