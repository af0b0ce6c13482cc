"""Attention heads inside composite layers (KerasHub's TransformerEncoder /
TransformerDecoder): channel pruning removes whole heads; shrink refuses
them in its one error, naming every composite layer."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery.core.depgraph import channel_groups
from keras_lottery.deploy.shrink import ShrinkError, shrink

keras_hub = pytest.importorskip("keras_hub")
PARTS = ("query", "key", "value")
# One size everywhere: JAX compiles an initializer per weight shape.
SIZES = dict(vocabulary_size=50, num_heads=4, hidden_dim=16,
             intermediate_dim=32, max_sequence_length=8)


@pytest.fixture(scope="module")
def pruned_bert():
    """A tiny BERT backbone, wrapped (in place) and channel-pruned once."""
    model = kl.wrap(keras_hub.models.BertBackbone(num_layers=2, **SIZES))
    kl.prune(model, 0.5, granularity="channel")
    return model


def head_groups(graph):
    return [g for g in graph.groups if g.producers and any(
        m.weight == "query/kernel" and m.axis == 1 for m in g.members)]


def alive_heads(kernel, part) -> np.ndarray:
    """Per head: whether any of its weights is nonzero."""
    kernel = np.asarray(keras.ops.convert_to_numpy(kernel))
    axes = (1, 2) if part == "output" else (0, 2)
    return np.abs(kernel).sum(axis=axes) > 0


def test_heads_of_an_encoder_are_one_group_of_its_attention(pruned_bert):
    graph = channel_groups(pruned_bert)
    groups = head_groups(graph)
    keys = [f"transformer_layer_{i}/self_attention_layer" for i in (0, 1)]
    assert [g.producers for g in groups] == [[k] for k in keys]
    group = groups[0]
    assert group.size == 4 and group.prunable
    assert "4 heads of transformer_layer_0/self_attention_layer" in str(group)
    described = {(m.weight, m.axis, m.role): m.units.tolist() for m in group.members}
    want = {(f"{p}/{w}", axis, role) for p in PARTS for w, axis, role in (
        ("kernel", 1, "out"), ("bias", 0, "follow"))}
    assert set(described) == want | {("output/kernel", 0, "in")}
    assert all(units == [0, 1, 2, 3] for units in described.values())


def test_channel_prune_zeroes_whole_heads_inside_the_encoders(pruned_bert, rng):
    model = pruned_bert
    x = {"token_ids": rng.integers(0, 50, (2, 8)).astype("int32"),
         "segment_ids": np.zeros((2, 8), "int32"),
         "padding_mask": np.ones((2, 8), "int32")}
    masks = kl.get_masks(model)
    plain = kl.strip(model)
    for i in (0, 1):
        key = f"transformer_layer_{i}/self_attention_layer"
        attention = plain.get_layer(f"transformer_layer_{i}")._self_attention_layer
        kept = masks[f"{key}/query/kernel"].any(axis=(0, 2))
        assert kept.sum() == 2  # 2 of the 4 heads, every weight of them
        for part in (*PARTS, "output"):
            mask_kept = masks[f"{key}/{part}/kernel"].any(
                axis=(1, 2) if part == "output" else (0, 2))
            np.testing.assert_array_equal(mask_kept, kept)
            dense = getattr(attention, f"_{part}_dense" if part != "output"
                            else "_output_dense")
            np.testing.assert_array_equal(alive_heads(dense.kernel, part), kept)
    # The masked model runs and the plain copy computes the same.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(plain(x)["sequence_output"]),
        keras.ops.convert_to_numpy(model(x)["sequence_output"]), atol=1e-5)


def test_shrink_refuses_heads_inside_composite_layers_in_one_error(pruned_bert):
    with pytest.raises(ShrinkError) as info:
        shrink(pruned_bert)
    assert info.value.layers == ["transformer_layer_0", "transformer_layer_1"]
    message = str(info.value)
    assert ("2 of the 4 heads of 'transformer_layer_1/self_attention_layer' "
            "(MultiHeadAttention) are pruned, but 'transformer_layer_1' "
            "(TransformerEncoder) cannot be rebuilt") in message
    assert "one num_heads" in message
    assert "exclude=['MultiHeadAttention']" in message


def test_shrink_refuses_zero_heads_of_a_plain_decoder():
    """Not wrapped: zero heads decide, and are named, not passed over."""
    model = keras_hub.models.GPT2Backbone(num_layers=1, **SIZES)
    attention = model.get_layer("transformer_layer_0")._self_attention_layer
    kernel = keras.ops.convert_to_numpy(attention._query_dense.kernel).copy()
    kernel[:, 1] = 0.0
    attention._query_dense.kernel.assign(kernel)
    for dense in (attention._key_dense, attention._value_dense):
        dense.kernel.assign(np.zeros(dense.kernel.shape, "float32"))
    with pytest.raises(ShrinkError, match=(
            r"1 of the 4 heads of 'transformer_layer_0/self_attention' "
            r"\(CachedMultiHeadAttention\)")) as info:
        shrink(model)
    assert info.value.layers == ["transformer_layer_0"]


def test_shrink_copies_a_decoder_that_builds_itself():
    """TransformerDecoder builds itself from its config (it holds its
    sequence shape): an unpruned GPT2 backbone is copied, built once."""
    model = keras_hub.models.GPT2Backbone(num_layers=1, **SIZES)
    inputs = {"token_ids": np.array([[1, 2, 3, 4, 5, 6, 7, 8]], "int32"),
              "padding_mask": np.ones((1, 8), "int32")}
    small, report = shrink(model, return_report=True)
    assert report.units == {}
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(inputs)),
        keras.ops.convert_to_numpy(model(inputs)), atol=1e-6)


class Block(keras.layers.Layer):
    """A composite layer holding a gated attention."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = keras.layers.MultiHeadAttention(
            4, 4, use_gate=True, name="attention")

    def call(self, x):
        return x + self.attention(x, x)


def test_gated_attention_heads_are_blocked_inside_and_outside_composites():
    x = keras.Input((8, 16))
    h = Block(name="block")(x)
    h = keras.layers.MultiHeadAttention(4, 4, use_gate=True, name="mha")(h, h)
    graph = channel_groups(keras.Model(x, keras.layers.Dense(2)(h)))
    groups = {g.producers[0]: g for g in head_groups(graph)}
    assert set(groups) == {"block/attention", "mha"}
    assert "'block/attention' (MultiHeadAttention) has a gate" in groups[
        "block/attention"].blockers
    assert "not a plain attention" in groups["mha"].blockers[0]
