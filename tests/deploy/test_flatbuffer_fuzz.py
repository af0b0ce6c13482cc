"""The `.tflite` reader on damaged files: truncated, random and mutated bytes.

The reader must answer every file with a result or `TFLiteFileError` (one
clear line in `keras-lottery inspect`), never another exception or a huge
allocation. The model is built with TFLite's own schema (no converter), so
this needs no backend and runs once, on JAX.
"""

from __future__ import annotations

import tracemalloc

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
flatbuffers = pytest.importorskip("flatbuffers")

from keras_lottery.deploy.tflite.flatbuffer import (  # noqa: E402
    TFLiteFileError,
    read_flatbuffer,
    read_tflite_weights,
)

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="reading a .tflite file does not depend on the backend: run once, "
           "on JAX",
)
#: The most a damaged file of a few KiB may make the reader allocate.
MAX_BYTES = 32 << 20


def _tensor(name, shape, buffer):
    tensor = schema.TensorT()
    tensor.name, tensor.shape, tensor.buffer = name.encode(), shape, buffer
    tensor.type = 0  # float32
    return tensor


def tiny_model() -> bytes:
    """A valid TFLite model: y = FULLY_CONNECTED(x, w[3, 4]) (no bias)."""
    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = (
        schema.BuiltinOperator.FULLY_CONNECTED)
    code.version = 1
    model.operatorCodes = [code]
    empty, weights = schema.BufferT(), schema.BufferT()
    weights.data = np.arange(12, dtype="float32").tobytes()
    model.buffers = [schema.BufferT(), empty, weights]
    graph = schema.SubGraphT()
    graph.tensors = [_tensor("x", [1, 4], 1), _tensor("w", [3, 4], 2),
                     _tensor("y", [1, 3], 0)]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, -1], [2]
    graph.operators, graph.inputs, graph.outputs = [op], [0], [2]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


VALID = tiny_model()


def read_or_refuse(content: bytes) -> None:
    """Reads `content`; only TFLiteFileError may come out, and the reader
    allocates at most MAX_BYTES."""
    tracemalloc.start()
    try:
        read_flatbuffer(content)
    except TFLiteFileError as error:
        assert "\n" not in str(error) and "export it again" in str(error).lower()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < MAX_BYTES, f"the reader allocated {peak} bytes"


def test_the_valid_model_reads():
    encodings, versions, ops = read_flatbuffer(VALID)
    assert ops == 1 and versions == {"FULLY_CONNECTED": 1}
    assert [(e["shape"], e["encoding"]) for e in encodings] == [((3, 4), "dense")]


@pytest.mark.parametrize("cut", [0, 3, 8, 15, 16, 40, len(VALID) // 2,
                                 len(VALID) - 8])
def test_a_truncated_file_is_a_clear_error(cut):
    with pytest.raises(TFLiteFileError, match=r"is (not a valid \.tflite "
                       r"file|damaged)"):
        read_flatbuffer(VALID[:cut])


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_reader(content):
    read_or_refuse(content)
    read_or_refuse(content[:4] + b"TFL3" + content[8:])


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True)
@hypothesis.given(st.lists(st.tuples(st.integers(0, len(VALID) - 1),
                                     st.integers(0, 255)),
                           min_size=1, max_size=6),
                  st.integers(16, len(VALID)))
def test_mutated_models_never_crash_the_reader(flips, length):
    content = bytearray(VALID)
    for at, value in flips:
        content[at] = value
    read_or_refuse(bytes(content[:length]))


def test_inspect_and_the_cli_on_damaged_files(tmp_path, capsys):
    from keras_lottery.apps.cli import main
    from keras_lottery.deploy.tflite.interpreter import inspect_tflite

    path = tmp_path / "model.tflite"
    path.write_bytes(VALID)
    np.testing.assert_array_equal(
        next(iter(read_tflite_weights(path).values())),
        np.arange(12, dtype="float32").reshape(3, 4))
    for content in (b"", b"\x00" * 64, np.random.default_rng(0).bytes(4096),
                    VALID[: len(VALID) // 2]):
        path.write_bytes(content)
        with pytest.raises(TFLiteFileError, match=r"model\.tflite"):
            read_tflite_weights(path)
        with pytest.raises(TFLiteFileError):
            inspect_tflite(path)
        assert main(["inspect", str(path)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        assert err.startswith("keras-lottery: error: ") and str(path) in err
