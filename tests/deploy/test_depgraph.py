"""channel_groups: which channels are pruned together, on hand-made graphs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_lottery.core.depgraph import channel_groups

L = keras.layers


def described(group):
    """`{(layer, weight, axis, role): [(position, unit), ...]}` of a group."""
    return {
        (m.layer, m.weight, m.axis, m.role): sorted(
            zip(m.positions.tolist(), m.units.tolist()))
        for m in group.members
    }


def by_producer(graph):
    return {tuple(g.producers): g for g in graph.groups if g.members}


def identity(n):
    return [(i, i) for i in range(n)]


def test_residual_add_is_one_group_with_the_batchnorm_and_the_next_rows():
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", name="a")(x)
    b = L.Conv2D(4, 1, use_bias=False, name="b")(x)
    h = L.Add(name="add")([a, b])
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU()(h)
    h = L.Conv2D(5, 3, name="c")(h)
    y = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h))
    groups = by_producer(channel_groups(keras.Model(x, y)))
    assert set(groups) == {(), ("a", "b"), ("c",), ("head",)}
    residual = groups[("a", "b")]
    assert residual.prunable and residual.size == 4
    want = {("a", "kernel", -1, "out"), ("a", "bias", 0, "follow"),
            ("b", "kernel", -1, "out"), ("c", "kernel", -2, "in")}
    want |= {("bn", w, 0, "follow")
             for w in ("gamma", "beta", "moving_mean", "moving_variance")}
    assert set(described(residual)) == want
    assert all(v == identity(4) for v in described(residual).values())
    assert set(described(groups[("c",)])) == {
        ("c", "kernel", -1, "out"), ("c", "bias", 0, "follow"),
        ("head", "kernel", -2, "in")}
    assert "model output 'head'" in groups[("head",)].blockers[0]
    assert "model input" in groups[()].blockers[0]


def test_concatenate_keeps_each_branch_a_group_at_its_offset():
    x = keras.Input((6, 6, 2))
    a = L.Conv2D(3, 1, name="a")(x)
    b = L.Conv2D(5, 1, name="b")(x)
    h = L.Concatenate()([a, b])
    y = L.Conv2D(2, 1, name="c")(h)
    groups = by_producer(channel_groups(keras.Model(x, y)))
    rows_a = described(groups[("a",)])[("c", "kernel", -2, "in")]
    rows_b = described(groups[("b",)])[("c", "kernel", -2, "in")]
    assert rows_a == identity(3)
    assert rows_b == [(3 + i, i) for i in range(5)]
    assert groups[("a",)].prunable and groups[("b",)].prunable


def test_depthwise_and_padding_follow_their_input_channels():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 1, name="a")(x)
    h = L.ZeroPadding2D(name="pad")(h)
    h = L.DepthwiseConv2D(3, name="dw")(h)
    h = L.BatchNormalization(name="bn", center=False)(h)
    h = L.Activation("relu6")(h)
    h = L.SeparableConv2D(6, 3, name="sep")(h)
    y = L.Dense(2, name="head")(L.GlobalMaxPooling2D()(h))
    groups = by_producer(channel_groups(keras.Model(x, y)))
    assert set(described(groups[("a",)])) == {
        ("a", "kernel", -1, "out"), ("a", "bias", 0, "follow"),
        ("dw", "kernel", -2, "follow"), ("dw", "bias", 0, "follow"),
        ("bn", "gamma", 0, "follow"), ("bn", "moving_mean", 0, "follow"),
        ("bn", "moving_variance", 0, "follow"),
        ("sep", "depthwise_kernel", -2, "follow"),
        ("sep", "pointwise_kernel", -2, "in")}
    assert set(described(groups[("sep",)])) == {
        ("sep", "pointwise_kernel", -1, "out"), ("sep", "bias", 0, "follow"),
        ("head", "kernel", -2, "in")}


def test_flatten_and_reshape_repeat_the_channels_with_their_stride():
    x = keras.Input((4, 4, 1))
    h = L.Conv2D(3, 1, name="a")(x)
    h = L.MaxPooling2D()(h)  # (2, 2, 3)
    flat = L.Dense(2, name="d1")(L.Flatten()(h))
    seq = L.Dense(2, name="d2")(L.Reshape((4, 3))(h))
    y = L.Concatenate()([flat, L.Flatten()(seq)])
    groups = by_producer(channel_groups(keras.Model(x, y)))
    members = described(groups[("a",)])
    assert members[("d1", "kernel", -2, "in")] == [(i, i % 3) for i in range(12)]
    assert members[("d2", "kernel", -2, "in")] == identity(3)


@pytest.mark.parametrize("mixer, reason", [
    (lambda: L.LayerNormalization(name="mix"), "'mix' (LayerNormalization)"),
    (lambda: L.Softmax(name="mix"), "'mix' (Softmax)"),
    (lambda: L.Reshape((3, 8), name="mix"), "'mix' (Reshape)"),
])
def test_layers_that_mix_channels_block_the_group(mixer, reason):
    x = keras.Input((4, 6))
    h = L.Dense(6, name="a")(x)
    h = mixer()(h)
    y = L.Dense(2, name="head")(L.Flatten()(h))
    groups = by_producer(channel_groups(keras.Model(x, y)))
    assert not groups[("a",)].prunable
    assert any(reason in b for b in groups[("a",)].blockers)


def test_nested_models_are_entered_with_prefixed_keys():
    inner_x = keras.Input((6, 6, 4))
    inner_y = L.Conv2D(5, 1, name="conv")(inner_x)
    inner_y = L.ReLU()(L.BatchNormalization(name="bn")(inner_y))
    inner = keras.Model(inner_x, inner_y, name="backbone")
    x = keras.Input((6, 6, 3))
    h = inner(L.Conv2D(4, 1, name="stem")(x))
    y = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h))
    graph = channel_groups(keras.Model(x, y))
    groups = by_producer(graph)
    assert ("backbone/conv", "kernel", -2, "in") in described(groups[("stem",)])
    assert set(described(groups[("backbone/conv",)])) >= {
        ("backbone/bn", "gamma", 0, "follow"), ("head", "kernel", -2, "in")}
    assert groups[("backbone/conv",)].prunable
    assert "prunable" in str(graph)


def test_subclassed_models_have_no_graph():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = L.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(TypeError, match="Received: model"):
        channel_groups(net)


def attention_model(**call):
    x = keras.Input((5, 6))
    h = L.Dense(8, name="pre")(x)
    a = L.MultiHeadAttention(3, 2, name="mha")(h, h, **call)
    a = a[0] if isinstance(a, (list, tuple)) else a
    y = L.Dense(4, name="post")(a)
    return keras.Model(x, L.Dense(2, name="head")(L.Flatten()(y)))


def test_attention_heads_are_one_group_of_their_projections():
    graph = channel_groups(attention_model())
    heads = [g for g in graph.groups if ("mha", "query/kernel", 1, "out")
             in described(g)]
    assert len(heads) == 1 and heads[0].prunable and heads[0].size == 3
    assert str(heads[0]).startswith("3 heads of mha -> mha")
    want = {("mha", f"{p}/{w}", axis, role)
            for p in ("query", "key", "value")
            for w, axis, role in (("kernel", 1, "out"), ("bias", 0, "follow"))}
    want.add(("mha", "output/kernel", 0, "in"))
    assert set(described(heads[0])) == want
    assert all(v == identity(3) for v in described(heads[0]).values())
    pre = by_producer(graph)[("pre",)]
    assert set(described(pre)) == {
        ("pre", "kernel", -1, "out"), ("pre", "bias", 0, "follow"),
        ("mha", "query/kernel", 0, "in"), ("mha", "key/kernel", 0, "in"),
        ("mha", "value/kernel", 0, "in")}
    assert pre.prunable
    outputs = [g for g in graph.groups
               if ("mha", "output/kernel", -1, "out") in described(g)]
    assert set(described(outputs[0])) == {
        ("mha", "output/kernel", -1, "out"), ("mha", "output/bias", 0, "follow"),
        ("post", "kernel", -2, "in")}
    assert outputs[0].size == 8 and outputs[0].prunable


def test_attention_returning_its_scores_blocks_its_groups():
    graph = channel_groups(attention_model(return_attention_scores=True))
    pre = by_producer(graph)[("pre",)]
    assert not pre.prunable
    assert "'mha' (MultiHeadAttention) is not a plain attention" in pre.blockers[0]
    heads = [g for g in graph.groups
             if ("mha", "query/kernel", 1, "out") in described(g)]
    assert heads[0].size == 3 and not heads[0].prunable  # named, not passed over
