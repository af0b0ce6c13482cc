"""Granularities: block, channel, N:M masks; checks; TFLite alignment."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from conftest import mlp

import keras_lottery as kl
from keras_lottery.deploy.nm import check_n_m
from keras_lottery.deploy.tflite.flatbuffer import read_tflite_weights
from keras_lottery.deploy.xnnpack import check_block_alignment, check_xnnpack_sparse
from keras_lottery.pruning.granularity import (
    BlockGranularity,
    get_granularity,
)
from keras_lottery.pruning.report import pruned_count


def randomize(model, rng):
    for wrapper in model.layers:
        kernel = wrapper.prunable_variable("kernel")
        kernel.assign(rng.normal(size=kernel.shape).astype("float32"))


def block_view(mask, rows):
    """(in, out) -> (blocks, rows, out) with the last partial block padded
    by repeating its first row (so a constant block stays constant)."""
    pad = -mask.shape[0] % rows
    padded = np.concatenate([mask, np.repeat(mask[-rows + pad:][:1], pad, 0)])
    return padded.reshape(-1, rows, mask.shape[1])


def dead_blocks(mask, rows):
    return int((~block_view(mask != 0, rows).any(axis=1)).sum())


def test_block_masks_are_constant_per_block_and_exact_in_count(rng):
    model = kl.wrap(mlp((20, 12, 8)))
    randomize(model, rng)
    for round_ in range(1, 4):
        before = kl.get_masks(model)
        kl.prune(model, 0.3, granularity="block", block_shape=(4, 1))
        masks = kl.get_masks(model)
        for key, mask in masks.items():
            blocks = block_view(mask, 4)
            assert (blocks.min(axis=1) == blocks.max(axis=1)).all(), key
            assert np.all(mask <= before[key])  # never revived
        # hidden: 5x12 = 60 blocks at 0.3, output: 3x8 = 24 blocks at 0.15
        alive_h, alive_o = 60, 24
        for _ in range(round_):
            alive_h -= pruned_count(0.3, alive_h)
            alive_o -= pruned_count(0.15, alive_o)
        assert 60 - dead_blocks(masks["dense/kernel"], 4) == alive_h
        assert 24 - dead_blocks(masks["dense_1/kernel"], 4) == alive_o


def test_block_scores_by_norm_and_partial_block_rule():
    # Input axis of 6 with (4, 1) blocks: rows 0-3 and the partial rows 4-5.
    kernel = np.array([[1.0, 3.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0],
                       [2.0, 2.0], [2.0, 2.0]], dtype="float32")
    g = BlockGranularity((4, 1))
    scores, alive = g.reduce(np.abs(kernel), np.ones_like(kernel), "w")
    # Blocks in (block row, column) order: rows 0-3, then the partial rows
    # 4-5, whose L1 of 4 is scaled by 4/2 (L2 by its square root).
    np.testing.assert_allclose(scores, [4.0, 3.0, 8.0, 8.0], rtol=1e-6)
    assert alive.all()
    l2 = BlockGranularity((4, 1), norm="l2").reduce(
        np.abs(kernel), np.ones_like(kernel), "w")[0]
    np.testing.assert_allclose(l2, [2.0, 3.0, 4.0, 4.0], rtol=1e-6)
    model = kl.wrap(keras.Sequential([keras.Input((6,)),
                                      keras.layers.Dense(2, use_bias=False)]))
    model.layers[0].layer.kernel.assign(kernel)
    kl.prune(model, 0.25, output_rate=0.25, granularity="block", min_remaining=0)
    mask = kl.get_masks(model)["dense/kernel"]
    np.testing.assert_array_equal(mask[:, 1], [0, 0, 0, 0, 1, 1])  # [3,0,0,0]
    np.testing.assert_array_equal(mask[:, 0], 1)
    model.layers[0].set_mask("kernel", np.ones((6, 2)))
    model.layers[0].layer.kernel.assign(kernel)  # pruned values were zeroed
    kl.prune(model, 0.25, output_rate=0.25, granularity="block",
             norm="l2", min_remaining=0)
    mask = kl.get_masks(model)["dense/kernel"]
    np.testing.assert_array_equal(mask[:, 0], [0, 0, 0, 0, 1, 1])  # [1,1,1,1]
    np.testing.assert_array_equal(mask[:, 1], 1)


def test_block_global_and_group_scopes_count_blocks(rng):
    model = kl.wrap(mlp((16, 8, 8, 4)))
    randomize(model, rng)
    report = kl.prune(model, 0.5, scope="global", granularity="block")
    masks = kl.get_masks(model)
    hidden = dead_blocks(masks["dense/kernel"], 4) + dead_blocks(
        masks["dense_1/kernel"], 4)
    assert hidden == pruned_count(0.5, 4 * 8 + 2 * 8)
    assert {w.pool for w in report.weights} == {"global", "output"}
    keras.backend.clear_session(free_memory=False)
    model = kl.wrap(mlp((16, 8, 8, 4)))
    randomize(model, rng)
    kl.prune(model, 0.2, groups=[kl.Group(["dense", "dense_1"], rate=0.25)],
             granularity="block", block_shape=(2, 2))
    masks = kl.get_masks(model)
    grid = [m.reshape(m.shape[0] // 2, 2, m.shape[1] // 2, 2).any(axis=(1, 3))
            for m in (masks["dense/kernel"] != 0, masks["dense_1/kernel"] != 0)]
    assert sum(int((~g).sum()) for g in grid) == pruned_count(0.25, 32 + 16)


def test_block_on_conv_kernels_tiles_input_channels_per_position(rng):
    model = kl.wrap(keras.Sequential([
        keras.Input((6, 6, 8)), keras.layers.Conv2D(4, 3),
        keras.layers.Flatten(), keras.layers.Dense(2)]))
    model.layers[0].prunable_variable("kernel").assign(
        rng.normal(size=(3, 3, 8, 4)).astype("float32"))
    kl.prune(model, 0.5, granularity="block")
    mask = kl.get_masks(model)["conv2d/kernel"]
    blocks = mask.reshape(3, 3, 2, 4, 4)
    assert (blocks.min(axis=3) == blocks.max(axis=3)).all()
    assert int((blocks[:, :, :, 0, :] == 0).sum()) == pruned_count(0.5, 72)


def test_channel_masks_zero_whole_units(rng):
    model = kl.wrap(keras.Sequential([
        keras.Input((6, 6, 3)), keras.layers.Conv2D(10, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(20, activation="relu"),
        keras.layers.Dense(3)]))
    for wrapper in model.layers[::2]:
        k = wrapper.prunable_variable("kernel")
        k.assign(rng.normal(size=k.shape).astype("float32"))
    raw = {key: keras.ops.convert_to_numpy(w.prunable_variable("kernel"))
           for key, w in (("conv", model.layers[0]), ("dense", model.layers[2]))}
    kl.prune(model, 0.3, granularity="channel", norm="l2")
    masks = kl.get_masks(model)
    dead = {}
    for key, units in (("conv2d/kernel", 10), ("dense/kernel", 20)):
        columns = masks[key].reshape(-1, units)
        dead[key] = ~columns.any(axis=0)
        assert (columns[:, dead[key]] == 0).all()
        assert int(dead[key].sum()) == pruned_count(0.3, units)
    # A conv filter's channel group: the filter and the next Dense's input
    # rows at every Flatten position (channel c is row c, c + 10, ...).
    conv = masks["conv2d/kernel"].reshape(-1, 10)
    assert (conv[:, ~dead["conv2d/kernel"]] == 1).all()  # kept filters whole
    rows = masks["dense/kernel"].reshape(16, 10, 20)
    assert (rows[:, dead["conv2d/kernel"]] == 0).all()
    assert (rows[:, ~dead["conv2d/kernel"]][..., ~dead["dense/kernel"]] == 1).all()
    norms = np.sqrt((raw["conv"].reshape(-1, 10) ** 2).sum(axis=0)
                    + (raw["dense"].reshape(16, 10, 20) ** 2).sum(axis=(0, 2)))
    gone = dead["conv2d/kernel"]
    assert norms[gone].max() <= norms[~gone].min()


def test_channel_prunes_attention_heads_whole_scored_by_all_projections(rng):
    x = keras.Input((5, 4))
    a = keras.layers.MultiHeadAttention(4, 2, name="mha")(x, x)
    a = keras.layers.Add()([x, a])  # a residual: output channels stay whole
    y = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(a))
    model = kl.wrap(keras.Model(x, y), exclude=["head"])
    mha = model.get_layer("mha")
    # Query slices rank heads 0 > 2,3 > 1; the output rows reverse that:
    # only a score summed over every projection gives the ranking below.
    scales = {"query": [3.0, 0.2, 1.0, 1.0], "output": [0.05, 3.0, 1.0, 1.2]}
    raw = {}
    for part in ("query", "key", "value", "output"):
        kernel = mha.prunable_variable(f"{part}/kernel")
        value = rng.uniform(0.5, 1.0, kernel.shape)
        axis = 0 if part == "output" else 1
        shape = [1] * value.ndim
        shape[axis] = 4
        value = value * np.reshape(scales.get(part, [1.0] * 4), shape)
        kernel.assign(value.astype("float32"))
        raw[part] = np.moveaxis(value.astype("float32"), axis, 0).reshape(4, -1)
    group = sum(np.abs(v).sum(axis=1) for v in raw.values())
    lowest = set(np.argsort(group)[:2].tolist())
    assert lowest != set(np.argsort(raw["query"].sum(axis=1))[:2].tolist())
    kl.prune(model, 0.5, granularity="channel")
    masks = kl.get_masks(model)
    heads = {p: np.moveaxis(masks[f"mha/{p}/kernel"], 0 if p == "output" else 1,
                            0).reshape(4, -1) for p in raw}
    alive = heads["query"].all(axis=1)
    assert int((~alive).sum()) == pruned_count(0.5, 4)
    assert set(np.flatnonzero(~alive).tolist()) == lowest
    for mask in heads.values():  # whole heads: every slice kept or gone
        assert (mask[alive] == 1).all() and (mask[~alive] == 0).all()

def test_n_m_rounds_approach_and_end_exactly_on_2_of_4(rng):
    model = kl.wrap(mlp((16, 12, 8)))
    randomize(model, rng)
    assert check_n_m(model, 2, 4).violations == 4 * 12 + 3 * 8
    for _ in range(8):
        kl.prune(model, 0.2, granularity="2:4")
        for key, mask in kl.get_masks(model).items():
            groups = mask.T.reshape(-1, 4).sum(axis=1)
            assert (groups >= 2).all(), key  # never below n per group
    for key, mask in kl.get_masks(model).items():
        groups = mask.T.reshape(-1, 4).sum(axis=1)
        np.testing.assert_array_equal(groups, 2, err_msg=key)
    report = check_n_m(model, 2, 4)
    assert report.ok and bool(report) and "OK" in str(report)
    # Magnitude inside each group: the two kept are the two largest.
    raw = keras.ops.convert_to_numpy(model.layers[0].prunable_variable("kernel"))
    mask = kl.get_masks(model)["dense/kernel"]
    groups = np.abs(raw).T.reshape(-1, 4)
    kept = mask.T.reshape(-1, 4) == 1
    assert (groups[kept].reshape(-1, 2).min(axis=1)
            >= groups[~kept].reshape(-1, 2).max(axis=1)).all()


def test_n_m_one_shot_and_partial_groups(rng):
    model = kl.wrap(mlp((10, 6, 3)))  # 10 inputs: groups of 4, 4 and 2
    randomize(model, rng)
    kl.prune(model, 0.5, output_rate=0.5, granularity="2:4")
    mask = kl.get_masks(model)["dense/kernel"]
    np.testing.assert_array_equal(mask[:4].sum(axis=0), 2)
    np.testing.assert_array_equal(mask[4:8].sum(axis=0), 2)
    np.testing.assert_array_equal(mask[8:].sum(axis=0), 2)
    assert check_n_m(model, 2, 4).ok
    assert not check_n_m(model, 1, 4).ok


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: get_granularity("row"), "granularity"),
        (lambda: get_granularity("4:2"), "0 < n < m"),
        (lambda: get_granularity("weight", block_shape=(4, 1)), "options"),
        (lambda: get_granularity("block", block_shape=(0, 1)), "block_shape"),
        (lambda: get_granularity("channel", norm="l3"), "norm"),
        (lambda: BlockGranularity().reduce(np.ones(5), np.ones(5), "l/w"),
         "rank >= 2"),
    ],
)
def test_bad_granularity_arguments_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_block_alignment_warns_on_a_mix(rng):
    model = kl.wrap(mlp((16, 8, 4)))
    randomize(model, rng)
    kl.prune(model, 0.5, output_rate=0.5, granularity="block")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert check_block_alignment(model) == {"dense": "block",
                                                "dense_1": "block"}
    keras.backend.clear_session(free_memory=False)
    model = kl.wrap(mlp((16, 8, 4)))
    randomize(model, rng)
    kl.prune(model, 0.5, rates={"dense_1": 0.5}, granularity="block")
    kl.prune(model, 0.5, rates={"dense": 0.0}, output_rate=0.5)
    with pytest.warns(UserWarning, match=r"\['dense'\] are block-sparse"):
        status = check_block_alignment(model)
    assert status == {"dense": "block", "dense_1": "unstructured"}


def mobilenet_like(stem_padding="valid", pool_keepdims=True):
    x = keras.Input((16, 16, 3))
    h = keras.layers.ZeroPadding2D(1)(x) if stem_padding == "valid" else x
    h = keras.layers.Conv2D(8, 3, strides=2, padding=stem_padding,
                            activation="relu", name="stem")(h)
    h = keras.layers.BatchNormalization()(h)
    a = keras.layers.Conv2D(16, 1, activation="relu", name="expand")(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(a)
    h = keras.layers.Conv2D(16, 1, name="project")(h)
    h = keras.layers.Add()([a, h])
    h = keras.layers.GlobalAveragePooling2D(keepdims=pool_keepdims)(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(x, keras.layers.Dense(4, name="head")(h))


def test_xnnpack_sparse_check_pattern_sparsity_and_breaking_layer():
    report = check_xnnpack_sparse(mobilenet_like())
    assert report.structure_ok and not report.ok
    assert report.start == ("stem",) and report.prunable == ("expand", "project")
    model = kl.wrap(mobilenet_like(), include=list(report.prunable))
    kl.prune(model, 0.75, rates={"Conv2D": 0.75})
    report = check_xnnpack_sparse(model)
    assert report.ok, str(report)
    assert min(report.sparsity.values()) > 2 / 3
    broken = check_xnnpack_sparse(mobilenet_like(stem_padding="same"))
    assert not broken.structure_ok
    assert broken.problems[0][0] == "stem" and "ZeroPadding2D" in str(broken)
    no_keepdims = check_xnnpack_sparse(mobilenet_like(pool_keepdims=False))
    assert not no_keepdims.ok and "keepdims" in str(no_keepdims)


def test_tflite_block_sparse_report_and_n_m_from_the_flatbuffer(tmp_path, rng):
    pytest.importorskip("ai_edge_litert")
    model = kl.wrap(mlp((32, 16, 8)))
    randomize(model, rng)
    for _ in range(3):  # all Dense layers block-pruned, >= 30% zeros each
        kl.prune(model, 0.5, output_rate=0.5, granularity="block")
    assert set(check_block_alignment(model).values()) == {"block"}
    path = tmp_path / "block.tflite"
    report = kl.export_tflite(model, path)
    fc = [t for t in report.tensors if t.op == "FULLY_CONNECTED"]
    assert len(fc) == 2
    assert all(t.encoding == "block_sparse" and t.block == (1, 4) for t in fc)
    weights = read_tflite_weights(path)
    plain = kl.strip(model)
    expected = [keras.ops.convert_to_numpy(layer.kernel).T
                for layer in plain.layers]
    for got, want in zip(weights.values(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)  # decoded exactly
    # 4x1 blocks keep 4 consecutive inputs: a 2:4 check must object.
    assert check_n_m(str(path), 2, 4).violations > 0

    keras.backend.clear_session(free_memory=False)
    nm = kl.wrap(mlp((32, 16, 8)))
    randomize(nm, rng)
    kl.prune(nm, 0.5, output_rate=0.5, granularity="2:4")
    nm_path = tmp_path / "nm.tflite"
    report = kl.export_tflite(nm, nm_path)
    assert any(t.encoding != "dense" for t in report.tensors)
    result = check_n_m(str(nm_path), 2, 4)
    assert result.ok and len(result.layers) == 2, str(result)
    plain = kl.strip(nm)
    for got, layer in zip(read_tflite_weights(nm_path).values(), plain.layers):
        np.testing.assert_allclose(
            got, keras.ops.convert_to_numpy(layer.kernel).T, rtol=1e-6)


def test_one_block_tiling_for_pruning_and_the_xnnpack_check():
    g = BlockGranularity((4, 1))
    mask = np.ones((6, 3))
    mask[0:4, 0] = 0  # a full block
    mask[4:6, 1] = 0  # the partial block at the end of the input axis
    assert g.aligned(mask)
    mask[5, 2] = 0  # half a partial block
    assert not g.aligned(mask)
    # A mask block pruning makes is aligned, partial blocks included.
    model = kl.wrap(mlp((6, 3, 2)))
    kl.prune(model, 0.5, granularity="block", output_rate=0.5)
    assert all(g.aligned(m) for m in kl.get_masks(model).values())
    assert set(check_block_alignment(model, warn=False).values()) == {"block"}
