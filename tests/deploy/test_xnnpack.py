"""XNNPACK end to end: a conv net pruned for XNNPACK's sparse inference
exports with its 1x1 convolutions sparse-encoded and every op on XNNPACK;
an embedding table is seen by the report; ops off XNNPACK are named.

Each exported file is made once per module (conversion runs in a
TensorFlow child process on JAX and PyTorch).
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery.deploy.tflite.export import export_tflite
from keras_lottery.deploy.tflite.interpreter import inspect_tflite
from keras_lottery.deploy.tflite.ops import UNKNOWN_LAYER, layer_of_tensor
from keras_lottery.deploy.xnnpack import check_xnnpack_sparse

pytest.importorskip("ai_edge_litert.interpreter")

L = keras.layers
SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK"}


def tutorial_net() -> keras.Model:
    """tfmot's XNNPACK tutorial network, smaller: a stem, depthwise and 1x1
    convolutions, GlobalAveragePooling2D(keepdims=True), Flatten, Dense."""
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((16, 16, 3)), L.ZeroPadding2D(1),
        L.Conv2D(8, 3, strides=2, name="stem"), L.BatchNormalization(),
        L.ReLU(), L.DepthwiseConv2D(3, padding="same"), L.ReLU(),
        L.Conv2D(16, 1, name="expand"), L.BatchNormalization(), L.ReLU(),
        L.ZeroPadding2D(1), L.DepthwiseConv2D(3, strides=2), L.ReLU(),
        L.Conv2D(32, 1, name="project"), L.ReLU(),
        L.GlobalAveragePooling2D(keepdims=True), L.Flatten(),
        L.Dense(10, name="logits"),
    ])


@pytest.fixture(scope="module")
def conv_export(tmp_path_factory):
    net = tutorial_net()
    check = check_xnnpack_sparse(net)
    assert check.prunable == ("expand", "project")
    model = kl.wrap(net, include=list(check.prunable))
    kl.prune(model, 0.75)
    assert check_xnnpack_sparse(model).ok
    path = tmp_path_factory.mktemp("xnnpack") / "net.tflite"
    return model, path, export_tflite(model, path)


def test_pruned_1x1_convs_are_sparse_encoded(conv_export):
    _, _, report = conv_export
    convs = {t.layer: t for t in report.tensors if t.op == "CONV_2D"}
    assert set(convs) == {"stem", "expand", "project"}
    for name in ("expand", "project"):
        # Sparse + DENSIFY is the form XNNPACK's sparse inference reads.
        assert convs[name].encoding == "densify", report
        assert convs[name].zeros == pytest.approx(0.75, abs=0.01)
        assert convs[name].stored_fraction == pytest.approx(0.25, abs=0.01)
    assert convs["stem"].encoding == "dense"
    assert report.sparse and report.file_bytes < report.dense_bytes


def test_the_whole_graph_runs_on_xnnpack(conv_export):
    """Keras 3's Flatten reads the batch size at run time (SHAPE,
    STRIDED_SLICE, PACK ops XNNPACK lacks); the export gives it a constant
    shape, as tf_keras' Flatten has."""
    _, _, report = conv_export
    assert not SHAPE_OPS & set(report.op_versions), report.op_versions
    assert "RESHAPE" in report.op_versions
    assert report.xnnpack == "all", str(report)
    assert report.off_xnnpack == ()
    assert all(t.xnnpack for t in report.tensors)
    assert set(report.max_error) == {"xnnpack", "builtin"}


def test_inspect_labels_are_the_layer_or_unknown(conv_export):
    """Without the Keras model, labels come from tensor names: the scope of
    the op reading the weight (Keras 3 adds `_<n>`), never a neighbour."""
    _, path, report = conv_export
    inspected = inspect_tflite(path)
    assert len(inspected.tensors) == len(report.tensors)
    for mine, theirs in zip(report.tensors, inspected.tensors):
        scope = theirs.layer.rsplit("/", 1)[-1]
        assert theirs.layer == UNKNOWN_LAYER or re.fullmatch(
            re.escape(mine.layer) + r"(_\d+)?", scope), (theirs.layer,
                                                          mine.layer)
    assert "?" not in [t.layer for t in inspected.tensors
                       if t.op == "CONV_2D"]


def test_tensor_names_of_tf_keras_files_name_the_weight_layer():
    """Names as tf_keras + the TFLite converter write them (copied from
    tfmot's XNNPACK tutorial model): the first name is a neighbour."""
    assert layer_of_tensor(
        "sequential/re_lu_2/Relu;sequential/batch_normalization_2/"
        "FusedBatchNormV3;sequential/conv2d_1/Conv2D1") == "sequential/conv2d_1"
    assert layer_of_tensor(
        "sequential/batch_normalization_1/FusedBatchNormV3;sequential/"
        "depthwise_conv2d/depthwise") == "sequential/depthwise_conv2d"
    assert layer_of_tensor("sequential/dense/MatMul1") == "sequential/dense"
    assert layer_of_tensor(
        "functional_1/re_lu_2_1/Relu6;functional_1/batch_normalization_2_1/"
        "batchnorm/mul_1;functional_1/depthwise_conv2d_1/depthwise;"
    ) == "functional_1/depthwise_conv2d_1"
    # Two layers' weight ops in one name, or none: unknown, not a guess.
    assert layer_of_tensor("a/x/MatMul;a/y/MatMul") == UNKNOWN_LAYER
    assert layer_of_tensor("arith.constant3") == UNKNOWN_LAYER


# -------------------------------------------------------------- embedding
def test_an_embedding_table_is_seen_and_sparse_encoded(tmp_path):
    """The converter leaves a GATHER table dense; export_tflite stores it
    sparse behind a DENSIFY op, and the file still verifies."""
    keras.utils.set_random_seed(0)
    x = keras.Input((6,), dtype="int32")
    h = L.GlobalAveragePooling1D()(L.Embedding(64, 8, name="tokens")(x))
    model = kl.wrap(keras.Model(x, L.Dense(4, name="head")(h)),
                    include=["tokens"])
    kl.prune(model, 0.8, output_rate=0.8)
    report = export_tflite(model, tmp_path / "emb.tflite")
    (table,) = [t for t in report.tensors if t.op == "GATHER"]
    assert table.layer == "tokens" and table.shape == (64, 8)
    assert table.zeros == pytest.approx(0.8, abs=0.01)
    assert table.encoding == "densify" and table.block == (1, 1)
    assert table.stored_fraction == pytest.approx(0.2, abs=0.01)
    assert report.sparse and report.file_bytes < 0.8 * report.dense_bytes
    assert set(report.max_error) == {"xnnpack", "builtin"}
    text = " ".join(report.notes)
    assert "No weight has >= 30% zeros" not in text
    assert "Embedding tables stored sparse behind a DENSIFY op" in text
    gathers = [r for _, op, r in report.off_xnnpack if op == "GATHER"]
    assert gathers and "XNNPACK has no GATHER" in gathers[0]
    assert "Zeros" in str(report) and "off XNNPACK: op #" in str(report)
    # The stored table decodes to the pruned embeddings exactly.
    from keras_lottery.deploy.tflite.flatbuffer import (
        Flatbuffer,
        _decode_sparse,
    )

    fb = Flatbuffer((tmp_path / "emb.tflite").read_bytes())
    unpack = fb.operators[0]
    assert fb.op_name(unpack) == "DENSIFY"
    stored = fb.graph.tensors[int(unpack.inputs[0])]
    values = np.frombuffer(
        bytes(bytearray(fb.model.buffers[stored.buffer].data)), "float32")
    expected = keras.ops.convert_to_numpy(
        kl.strip(model).get_layer("tokens").embeddings)
    np.testing.assert_array_equal(_decode_sparse(stored, values), expected)


def test_a_table_left_dense_is_named_with_the_reason():
    from keras_lottery.deploy.tflite.report import (
        TensorEncoding,
        dense_weights_note,
    )

    table = TensorEncoding("GATHER", 3, "tokens", "t", (64, 8), "float16",
                           "dense", None, 1.0, 1024, False, 0.8)
    note = dense_weights_note([table])
    assert "tokens (GATHER table, 80% zeros, 1,024 bytes)" in note
    assert "reads a dense table only" in note and "DEQUANTIZE" in note
    assert dense_weights_note([table], only_zeroed=True) == note
    assert "No weight has >= 30% zeros" in dense_weights_note([])
