"""Tests for TFLite / LiteRT export (keras_lottery.export, keras-lottery CLI).

Conversion is slow (on JAX and PyTorch it runs in a TensorFlow child
process), so each exported file is made once per module and shared.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import mlp

import keras_lottery as kl
from keras_lottery.apps import cli
from keras_lottery.deploy.tflite.benchmark import benchmark_tflite
from keras_lottery.deploy.tflite.export import export_tflite
from keras_lottery.deploy.tflite.interpreter import inspect_tflite
from keras_lottery.deploy.tflite.report import ExportError, ExportReport
from keras_lottery.deploy.tflite.verify import TOLERANCES, verify

litert = pytest.importorskip("ai_edge_litert.interpreter")
schema = pytest.importorskip("ai_edge_litert.schema_py_generated")


@keras.saving.register_keras_serializable(package="keras_lottery_tests")
class ErfInv(keras.layers.Layer):
    """A layer whose op (Erfinv) TFLite builtins cannot express."""

    def call(self, inputs):
        return keras.ops.erfinv(0.5 * keras.ops.tanh(inputs))


# ---------------------------------------------------------------- helpers
def _magnitude_mask(kernel: np.ndarray, sparsity: float, rows: int = 1):
    """Keeps the largest `kernel[i:i+rows, j]` blocks by summed |w|."""
    n_in, n_out = kernel.shape
    padded = -(-n_in // rows) * rows
    scores = np.zeros((padded, n_out))
    scores[:n_in] = np.abs(kernel)
    blocks = scores.reshape(padded // rows, rows, n_out).sum(axis=1)
    keep = blocks > np.quantile(blocks, sparsity)
    return np.repeat(keep, rows, axis=0)[:n_in].astype("float32")


def _pruned_mlp(sizes, sparsity=0.9, rows=1):
    keras.utils.set_random_seed(7)
    model = kl.wrap(mlp(sizes))
    for wrapper in model.layers:
        kernel = np.asarray(
            keras.ops.convert_to_numpy(wrapper.prunable_variable("kernel")))
        wrapper.set_mask("kernel", _magnitude_mask(kernel, sparsity, rows))
    return model


def _fc_weights_in_flatbuffer(path) -> list[tuple[str, tuple | None]]:
    """(encoding, block) of each FullyConnected weight, read independently."""
    buf = Path(path).read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    graph = model.Subgraphs(0)
    codes = [max(model.OperatorCodes(i).BuiltinCode(),
                 model.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(model.OperatorCodesLength())]
    ops = schema.BuiltinOperator
    producer = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        for j in range(op.OutputsLength()):
            producer[op.Outputs(j)] = op
    found = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if codes[op.OpcodeIndex()] != ops.FULLY_CONNECTED:
            continue
        weight = op.Inputs(1)
        encoding = "block_sparse"
        source = producer.get(weight)
        if source is not None and codes[source.OpcodeIndex()] == ops.DENSIFY:
            encoding, weight = "densify", source.Inputs(0)
        tensor = graph.Tensors(weight)
        sparsity = tensor.Sparsity()
        if sparsity is None:
            found.append(("dense", None))
            continue
        rank = tensor.ShapeLength()
        block = [1] * rank
        for k in range(sparsity.BlockMapLength()):
            size = sparsity.DimMetadata(rank + k).DenseSize()
            block[sparsity.BlockMap(k)] = size
        found.append((encoding, tuple(block)))
    return found


def _run_tflite(path, x, *, xnnpack: bool) -> np.ndarray:
    resolver = (litert.OpResolverType.AUTO if xnnpack else
                litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter = litert.Interpreter(model_path=str(path),
                                     experimental_op_resolver_type=resolver)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    (out,) = runner(**{name: x}).values()
    return out


def _predict(model, x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


# --------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def unstructured(tmp_path_factory):
    """An MLP pruned to 90% unstructured, exported float32."""
    model = _pruned_mlp((64, 256, 256, 16))
    path = tmp_path_factory.mktemp("unstructured") / "mlp.tflite"
    return model, path, export_tflite(model, path)


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    """An MLP pruned to 90% in 1x4 blocks, exported through the CLI.

    Returns the model, the .tflite path and the report as JSON data.
    """
    model = _pruned_mlp((64, 128, 16), rows=4)
    folder = tmp_path_factory.mktemp("blocks")
    saved, path = folder / "mlp.keras", folder / "mlp.tflite"
    kl.strip(model).save(saved)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(["export", str(saved), str(path), "--json"])
    assert status == 0
    return model, path, json.loads(out.getvalue())


@pytest.fixture(scope="module")
def int8_unstructured(tmp_path_factory):
    """90% unstructured, full int8: the XNNPACK trap."""
    model = _pruned_mlp((64, 128, 16))
    data = np.random.default_rng(0).standard_normal((64, 64)).astype("float32")
    path = tmp_path_factory.mktemp("int8") / "mlp.tflite"
    return model, path, export_tflite(model, path, quantize="int8",
                                      representative_data=data)


# ------------------------------------------------------------------ float
def test_export_loads_and_matches_keras(unstructured):
    model, path, report = unstructured
    assert path.is_file()
    x = np.random.default_rng(1).standard_normal((5, 64)).astype("float32")
    expected = _predict(model, x)
    for xnnpack in (True, False):
        got = _run_tflite(path, x, xnnpack=xnnpack)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert set(report.max_error) == {"xnnpack", "builtin"}
    assert max(report.max_error.values()) <= TOLERANCES[None]
    assert report.backend == keras.backend.backend()


def test_unstructured_90_percent_is_small(unstructured):
    _, path, report = unstructured
    assert report.file_bytes == os.path.getsize(path)
    assert report.sparse
    assert report.file_bytes <= 0.2 * report.dense_bytes, report


def test_unstructured_encoding_matches_flatbuffer(unstructured):
    model, path, report = unstructured
    fc = [(t.encoding, t.block) for t in report.tensors
          if t.op == "FULLY_CONNECTED"]
    assert fc == _fc_weights_in_flatbuffer(path)
    assert fc == [("densify", (1, 1))] * 3
    assert report.op_versions["DENSIFY"] >= 1
    # Named after the Keras layers (auto-named, so whatever ran before).
    names = [layer.name for layer in kl.strip(model).layers]
    assert len(names) == 3 and [t.layer for t in report.tensors] == names
    assert all(0.05 < t.stored_fraction < 0.15 for t in report.tensors)


def test_block_1x4_is_block_sparse_fully_connected(blocks):
    model, path, report = blocks
    fc = [(t["encoding"], tuple(t["block"])) for t in report["tensors"]
          if t["op"] == "FULLY_CONNECTED"]
    assert fc == _fc_weights_in_flatbuffer(path)
    assert fc == [("block_sparse", (1, 4))] * 2
    assert report["sparse"] is True
    # The sparse FullyConnected kernel is builtin only: no XNNPACK.
    assert all(t["xnnpack"] is False for t in report["tensors"])
    x = np.random.default_rng(2).standard_normal((3, 64)).astype("float32")
    np.testing.assert_allclose(_run_tflite(path, x, xnnpack=False),
                               _predict(model, x), rtol=1e-4, atol=1e-4)


def test_report_is_printable_and_json_able(unstructured):
    _, path, report = unstructured
    text = str(report)
    assert str(path) in text and f"{report.file_bytes:,}" in text
    assert "sparse 1x1 + densify" in text and "XNNPACK: all" in text
    data = json.loads(report.to_json())
    assert data["file_bytes"] == report.file_bytes
    assert data["tensors"][0]["block"] == [1, 1]
    assert data["size_ratio"] == pytest.approx(report.size_ratio)


def test_inspect_reads_the_same_encodings(blocks):
    _, path, report = blocks
    inspected = inspect_tflite(path)
    assert isinstance(inspected, ExportReport)
    assert [(t.encoding, list(t.block), t.xnnpack)
            for t in inspected.tensors] == [
        (t["encoding"], t["block"], t["xnnpack"]) for t in report["tensors"]]
    assert inspected.file_bytes == report["file_bytes"]
    assert inspected.dense_bytes is None
    assert "block-sparse 1x4" in str(inspected)


# ------------------------------------------------------------------- int8
def test_int8_unstructured_falls_back_to_a_loadable_encoding(int8_unstructured):
    model, path, report = int8_unstructured
    assert report.quantize == "int8"
    assert not report.sparse
    (note,) = [n for n in report.notes if "XNNPACK" in n]
    # The real cause (LiteRT's words) and the documented fix.
    assert "failed to prepare" in note and "wrong outputs" not in note
    assert "1x16 blocks" in note and "block_shape=(16, 1)" in note
    assert report.xnnpack != "load fails"
    assert all(t.dtype == "int8" and t.encoding == "dense"
               for t in report.tensors)
    assert report.file_bytes == report.dense_bytes
    x = np.random.default_rng(3).standard_normal((4, 64)).astype("float32")
    expected = _predict(model, x)
    got = _run_tflite(path, x, xnnpack=True)  # loads under XNNPACK
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(got - expected)) <= TOLERANCES["int8"] * scale


def test_a_failed_run_under_xnnpack_is_not_called_wrong_outputs(
        int8_unstructured, monkeypatch):
    """A sparse file that loads but fails when run under XNNPACK (a kernel
    "failed to prepare" at the verification batch size) gets the load
    failure's note: the real error and the 1x16 advice."""
    from keras_lottery.deploy.tflite import export as export_module

    model, path, _ = int8_unstructured
    real = export_module.verify_outputs
    calls = []

    def failing_once(content, *args, **kwargs):
        calls.append(content)
        if len(calls) == 1:
            raise ExportError(
                "The converted model fails to run with the default delegates"
                " (XNNPACK): Node number 4 (TfLiteXNNPackDelegate) failed to "
                "prepare.", runtime="xnnpack", kind="run")
        return real(content, *args, **kwargs)

    monkeypatch.setattr(export_module, "verify_outputs", failing_once)
    data = np.random.default_rng(0).standard_normal((8, 64)).astype("float32")
    notes = []
    dense = path.read_bytes()
    content, used_sparse, errors, _ = export_module._verify_or_fall_back(
        b"sparse file", dense, True, kl.strip(model), [data], "int8", notes)
    assert content == dense and not used_sparse and calls[1] == dense
    assert errors["xnnpack"] <= TOLERANCES["int8"]
    (note,) = notes
    assert "failed to prepare" in note and "wrong outputs" not in note
    assert "1x16 blocks" in note


def test_float32_not_smaller_note_does_not_blame_int8(tmp_path):
    """A tiny float32 weight: DENSIFY and indices outweigh its zeros."""
    model = kl.wrap(mlp((8, 4)))
    kl.prune(model, 0.5, output_rate=0.5)
    report = export_tflite(model, tmp_path / "m.tflite")
    (note,) = report.notes
    assert "not smaller" in note and "int8" not in note, note
    assert "float32" in note and "1x4 blocks" in note
    assert not report.sparse and report.file_bytes == report.dense_bytes


# ------------------------------------------------------------- bad inputs
def test_path_must_end_with_tflite(tmp_path):
    model = mlp()
    with pytest.raises(ValueError, match=r"\.tflite.*Received: path="):
        export_tflite(model, tmp_path / "model.lite")
    with pytest.raises(TypeError, match="Received: path=3"):
        export_tflite(model, 3)


def test_unbuilt_model_is_an_error(tmp_path):
    model = keras.Sequential([keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="not built"):
        export_tflite(model, tmp_path / "m.tflite")
    with pytest.raises(TypeError, match=r"keras\.Model"):
        export_tflite("model.keras", tmp_path / "m.tflite")


def test_int8_needs_representative_data(tmp_path):
    with pytest.raises(ValueError, match=r"representative_data=None.*x_train"):
        export_tflite(mlp(), tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(ValueError, match="Received: quantize='int4'"):
        export_tflite(mlp(), tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(ValueError, match=r"shape \(None, 8\).*\(10, 3\)"):
        export_tflite(mlp(), tmp_path / "m.tflite", quantize="int8",
                      representative_data=np.zeros((10, 3)))
    assert not list(tmp_path.iterdir())


def test_unsupported_op_fails_loudly_and_leaves_no_file(tmp_path):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
                              ErfInv()])
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"builtin ops only.*Erfinv"):
        export_tflite(model, path)
    assert not list(tmp_path.iterdir())


def test_dict_inputs_and_sequence_axes_export(tmp_path):
    """A KerasHub text backbone: dict inputs, sequence axes of size None."""
    keras_hub = pytest.importorskip("keras_hub")
    model = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=16)
    report = export_tflite(model, tmp_path / "bert.tflite", sparse=False)
    assert set(report.max_error) == {"xnnpack", "builtin"}
    assert max(report.max_error.values()) <= TOLERANCES[None]


def test_mismatch_is_a_clear_error(unstructured):
    _, path, _ = unstructured
    other = mlp((64, 256, 256, 16))  # same shapes, other weights
    x = np.ones((2, 64), "float32")
    with pytest.raises(ExportError, match="differ from the Keras model"):
        verify(path.read_bytes(), other, [x], None, xnnpack_loads=True)


# -------------------------------------------------------------- benchmark
def test_benchmark_times_both_runtimes(unstructured):
    _, path, _ = unstructured
    rows = benchmark_tflite(path, batch_sizes=(1, 4), runs=3, warmup=1)
    assert [r.batch_size for r in rows] == [1, 4]
    for row in rows:
        assert row.builtin_ms > 0 and row.xnnpack_ms > 0
    with pytest.raises(ValueError, match="batch_sizes"):
        benchmark_tflite(path, batch_sizes=(0,))


# -------------------------------------------------------------------- CLI
def test_cli_inspect_prints_the_table(blocks, capsys):
    _, path, _ = blocks
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "block-sparse 1x4" in out and "FULLY_CONNECTED" in out
    assert cli.main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sparse"] is True
    assert cli.main(["inspect", str(path.with_name("missing.tflite"))]) == 1
    assert "keras-lottery: error:" in capsys.readouterr().err


def test_cli_export_errors(tmp_path, capsys):
    saved = tmp_path / "m.keras"
    mlp().save(saved)
    assert cli.main(["export", str(saved), str(tmp_path / "m.bin")]) == 1
    assert "Received: path=" in capsys.readouterr().err
    assert cli.main(["export", str(saved), str(tmp_path / "m.tflite"),
                     "--quantize", "int8"]) == 1
    assert "representative" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tflite"))
    assert set(cli.COMMANDS) >= {"export", "inspect"}
