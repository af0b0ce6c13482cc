"""Mask analysis: mask_overlap, SearchResult.mask_overlap/overlap_matrix,
plot_overlap and MergedResult.seed_overlap."""

from __future__ import annotations

import importlib.util
import json

import keras
import numpy as np
import pytest

import keras_lottery as kl


def masks(**weights):
    return {name.replace("_", "/"): np.array(v) for name, v in weights.items()}


# ------------------------------------------------------------ known values
def test_known_values_per_weight_and_overall():
    a = masks(fc_kernel=[[1, 1], [1, 0]], out_kernel=[1, 0, 1, 0])
    b = masks(fc_kernel=[[1, 0], [1, 0]], out_kernel=[0, 1, 1, 0])
    overlap = kl.mask_overlap(a, b)
    assert isinstance(overlap, kl.MaskOverlap)
    fc, out = overlap.per_weight
    assert fc["weight"] == "fc/kernel" and fc["size"] == 4
    assert fc["jaccard"] == pytest.approx(2 / 3)
    assert fc["survived"] == 1.0
    assert (fc["density_a"], fc["density_b"]) == (0.75, 0.5)
    # n p q = 1.5 shared by chance; union 3 + 2 - 1.5.
    assert fc["chance_jaccard"] == pytest.approx(1.5 / 3.5)
    assert out["jaccard"] == pytest.approx(1 / 3)
    assert out["survived"] == 0.5
    assert out["chance_jaccard"] == pytest.approx(1 / 3)
    # Overall: 3 shared of 6 kept by either; 3 of b's 4 survived in a.
    assert overlap.jaccard == 0.5 and overlap.survived == 0.75
    assert overlap.chance_jaccard == pytest.approx(2.5 / 6.5)
    assert (overlap.density_a, overlap.density_b) == (0.625, 0.5)
    with pytest.raises(AttributeError):
        overlap.jaccard = 1.0  # frozen


def test_identical_disjoint_and_nested_masks():
    a = masks(fc_kernel=[1, 1, 0, 0, 1, 0])
    same = kl.mask_overlap(a, a)
    assert (same.jaccard, same.survived) == (1.0, 1.0)
    disjoint = kl.mask_overlap(a, masks(fc_kernel=[0, 0, 1, 1, 0, 1]))
    assert (disjoint.jaccard, disjoint.survived) == (0.0, 0.0)
    assert disjoint.chance_jaccard == pytest.approx(1.5 / 4.5)
    nested = kl.mask_overlap(masks(fc_kernel=np.ones(6)), a)
    assert nested.survived == 1.0 and nested.jaccard == 0.5
    assert nested.chance_jaccard == pytest.approx(0.5)  # b within dense a
    empty = kl.mask_overlap(masks(fc_kernel=np.zeros(3)),
                            masks(fc_kernel=np.zeros(3)))
    assert (empty.jaccard, empty.survived) == (1.0, 1.0)


def test_chance_level_matches_random_masks():
    rng = np.random.default_rng(0)
    n, p, q = 20000, 0.3, 0.2
    a = {"w/kernel": rng.random(n) < p}
    b = {"w/kernel": rng.random(n) < q}
    overlap = kl.mask_overlap(a, b)
    assert overlap.jaccard == pytest.approx(overlap.chance_jaccard, abs=0.01)
    assert overlap.survived == pytest.approx(overlap.density_a, abs=0.02)


def test_table_and_to_dict():
    overlap = kl.mask_overlap(masks(fc_kernel=[1, 1, 1, 0]),
                              masks(fc_kernel=[1, 1, 0, 0]))
    text = str(overlap)
    lines = text.splitlines()
    assert lines[0].split() == ["weight", "size", "density_a", "density_b",
                                "jaccard", "survived", "chance"]
    assert lines[2].split()[0] == "fc/kernel" and lines[-1].split()[0] == "total"
    assert "0.6667" in text and "0.4286" in text
    data = overlap.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["per_weight"][0]["jaccard"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------ errors
def test_mismatched_keys_say_which():
    with pytest.raises(ValueError, match=r"Only in a: \['fc/kernel'\]; only "
                       r"in b: \['other/kernel'\]\. Received: "):
        kl.mask_overlap(masks(fc_kernel=[1, 0]), masks(other_kernel=[1, 0]))


def test_mismatched_shapes_say_which():
    with pytest.raises(ValueError, match=r"'fc/kernel' differ in shape\. "
                       r"Received: \(2,\) in a, \(3,\) in b"):
        kl.mask_overlap(masks(fc_kernel=[1, 0]), masks(fc_kernel=[1, 0, 1]))


def test_by_order_pairs_differently_named_weights():
    a = masks(fc_kernel=[1, 0], out_kernel=[1, 1])
    b = masks(dense_kernel=[1, 0], dense1_kernel=[1, 0])
    overlap = kl.mask_overlap(a, b, by="order")
    assert [r["weight"] for r in overlap.per_weight] == ["fc/kernel", "out/kernel"]
    assert overlap.survived == 1.0 and overlap.jaccard == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="different numbers of weights"):
        kl.mask_overlap(a, masks(fc_kernel=[1, 0]), by="order")
    with pytest.raises(ValueError, match="`by` is one of"):
        kl.mask_overlap(a, a, by="name ")
    with pytest.raises(TypeError, match="Received: list"):
        kl.mask_overlap([1, 0], a)


# ------------------------------------------------------------- a search
def make_model():
    keras.utils.set_random_seed(0)
    model = kl.wrap(keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="relu", name="fc"),
        keras.layers.Dense(2, name="out"),
    ]))
    model.compile("sgd", "mse")
    return model


X = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
Y = np.ones((16, 2), "float32")


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    model = make_model()
    directory = tmp_path_factory.mktemp("overlap") / "search"
    result = kl.lottery_search(
        model, lambda m: m.fit(X, Y, epochs=1, verbose=0), rounds=2,
        rate=0.5, seed=0, directory=directory, verbose=0,
    )
    return model, result, directory


def test_search_rounds_overlap(search):
    model, result, directory = search
    later = result.mask_overlap(0, 2)
    assert later.survived == 1.0  # round 0 is dense
    assert later.density_a == 1.0
    assert later.jaccard == pytest.approx(later.density_b)
    nested = result.mask_overlap(1, 2)
    assert nested.survived == 1.0  # a later round keeps a subset
    assert nested.jaccard == pytest.approx(nested.density_b / nested.density_a)
    assert 0.5 < nested.jaccard < 0.7  # the output layer is pruned at half rate
    # The model ends with round 2's masks; a model is accepted as masks.
    assert kl.mask_overlap(model, result.masks(2)).jaccard == 1.0
    matrix = result.overlap_matrix()
    assert matrix.shape == (3, 3)
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert matrix[0, 2] == pytest.approx(later.jaccard)
    loaded = kl.SearchResult.load(directory)
    assert loaded.mask_overlap(1, 2) == nested


def test_search_without_masks_says_so(search):
    _, result, _ = search
    numbers_only = kl.SearchResult.from_json(json.dumps(
        {"rounds": [r.to_dict() for r in result.rounds]}))
    with pytest.raises(ValueError, match=r"masks of round 0 .*to_json keeps"):
        numbers_only.mask_overlap(0, 1)
    with pytest.raises(ValueError, match="No round 7"):
        result.mask_overlap(0, 7)


def test_plot_overlap_writes_a_png(search, tmp_path):
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed (the `plot` extra)")
    _, result, _ = search
    path = kl.plot_overlap(result, tmp_path / "overlap.png", title="t")
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"ending in \.png"):
        kl.plot_overlap(result, tmp_path / "overlap.jpg")
    with pytest.raises(TypeError, match="Received: dict"):
        kl.plot_overlap({}, tmp_path / "x.png")


# ------------------------------------------------------------ several seeds
def hand_built(kept_1, kept_2, names=("fc/kernel",)):
    rounds = [kl.RoundRecord(0, 1.0, {}, {"loss": 1.0}),
              kl.RoundRecord(1, 0.5, {}, {"loss": 1.0}),
              kl.RoundRecord(2, 0.25, {}, {"loss": 1.0})]
    kept = {0: np.ones(4), 1: np.array(kept_1), 2: np.array(kept_2)}
    return kl.SearchResult(
        rounds, masks={r: {names[0]: v} for r, v in kept.items()})


def test_seed_overlap_is_the_mean_pairwise_jaccard():
    merged = kl.merge_results([
        hand_built([1, 1, 0, 0], [1, 0, 0, 0]),
        hand_built([0, 1, 1, 0], [0, 1, 0, 0], names=("dense_3/kernel",)),
        hand_built([1, 1, 0, 0], [1, 0, 0, 0]),
    ])
    values = merged.seed_overlap()
    # Round 1: pairs 1/3, 1/3 and 1; round 2: 0, 0 and 1.
    assert values == pytest.approx([1.0, 5 / 9, 1 / 3])


def test_seed_overlap_needs_two_searches_and_their_masks():
    lone = kl.SearchResult([kl.RoundRecord(0, 1.0, {}, {"loss": 1.0}),
                            kl.RoundRecord(1, 0.3, {}, {"loss": 1.0})],
                           masks={0: {"fc/kernel": np.ones(4)},
                                  1: {"fc/kernel": np.ones(4)}})
    merged = kl.merge_results([hand_built([1, 1, 0, 0], [1, 0, 0, 0]), lone])
    assert merged.seed_overlap() == [1.0, None, None, None]
    no_masks = kl.SearchResult([kl.RoundRecord(0, 1.0, {}, {"loss": 1.0})])
    merged = kl.merge_results([hand_built([1, 1, 0, 0], [1, 0, 0, 0]), no_masks])
    with pytest.raises(ValueError, match=r"results\[1\] does not hold them: "
                       "The masks of round 0 were not kept"):
        merged.seed_overlap()
