"""Reading a `.tflite` flatbuffer: ops, stored weights, sparse encodings.

The reader trusts nothing in the file: the header (size, the `TFL3`
identifier, the root offset) is checked before parsing, the parse itself
turns any out-of-range offset into `TFLiteFileError`, and every index
(op codes, tensors, buffers) and size (shapes, sparse dimensions) is checked
before it is used, so a damaged file is a one-line error, never a crash or a
huge allocation.
"""

from __future__ import annotations

import os
import struct

import keras
import numpy as np

from keras_lottery.deploy.tflite.ops import layer_of_tensor
from keras_lottery.deploy.tflite.paths import check_path
from keras_lottery.errors import KerasLotteryError

#: Ops that only unpack a stored weight; the reader looks through them.
UNPACK_OPS = ("DENSIFY", "DEQUANTIZE")

#: The most elements a weight read from a file may have when decoded.
MAX_ELEMENTS = 1 << 28

#: What parsing a damaged flatbuffer can raise.
_PARSE_ERRORS = (struct.error, IndexError, ValueError, TypeError, KeyError,
                 AttributeError, UnicodeDecodeError, OverflowError,
                 RecursionError)


class TFLiteFileError(KerasLotteryError, ValueError):
    """A `.tflite` file is damaged, truncated or not a TFLite model.

    Example:

    >>> from keras_lottery.deploy.tflite.flatbuffer import (
    ...     Flatbuffer, TFLiteFileError)
    >>> try:
    ...     Flatbuffer(b"garbage", "model.tflite")
    ... except TFLiteFileError as error:
    ...     print(error)  # doctest: +ELLIPSIS
    model.tflite is not a valid .tflite file: it is 7 bytes, ...
    """


TENSOR_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64",
    6: "bool", 7: "int16", 9: "int8", 10: "float64", 17: "int4",
}


def _schema():
    """The flatbuffer reader generated from TFLite's `schema.fbs`."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:  # pragma: no cover - depends on what is installed
        try:
            from tensorflow.lite.python import schema_py_generated
        except ImportError as error:
            raise ImportError(
                "Reading a .tflite file needs the TFLite schema reader, "
                "shipped in `ai-edge-litert` (or `tensorflow`). Install it "
                "with: pip install 'keras-lottery[export]'."
            ) from error
    return schema_py_generated


def _op_names() -> dict[int, str]:
    ops = _schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_")}


def _buffer_bytes(buffer) -> int:
    if buffer is None:
        return 0
    if getattr(buffer, "offset", 0) and buffer.offset > 1:
        return int(buffer.size)
    return 0 if buffer.data is None else len(buffer.data)


def _name(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw or "")


def _block(tensor) -> tuple[int, ...]:
    sparsity = tensor.sparsity
    rank = len(tensor.shape)
    block = [1] * rank
    block_map = [] if sparsity.blockMap is None else list(sparsity.blockMap)
    for k, dim in enumerate(block_map):
        block[int(dim)] = int(sparsity.dimMetadata[rank + k].denseSize)
    return tuple(block)


def keras_weight_shapes(model) -> list[tuple[str, tuple[int, ...]]]:
    """`(layer name, sorted shape)` of every rank >= 2 weight, in order."""
    found = []

    def visit(layer, prefix):
        children = getattr(layer, "layers", None)
        if isinstance(layer, keras.Model) and children is not None:
            for child in children:
                visit(child, f"{prefix}{layer.name}/" if layer is not model
                      else prefix)
            return
        for weight in layer.weights:
            if len(weight.shape) >= 2:
                found.append((prefix + layer.name,
                              tuple(sorted(int(d) for d in weight.shape))))

    visit(model, "")
    return found


def _name_layers(encodings: list[dict], keras_weights) -> None:
    """Sets each encoding's `layer` from the Keras model, else the tensor.

    TFLite keeps no layer names, and the tensor names carry TensorFlow's
    uniquified scopes (`dense_1_2`), so weights are matched to the Keras
    weights of the same shape, in graph order; without a Keras model, the
    layer comes from the tensor name (`ops.layer_of_tensor`: the scope of
    the op reading the weight, or "?").
    """
    unused = list(keras_weights)
    for record in encodings:
        key = tuple(sorted(record["shape"]))
        match = next((i for i, (_, shape) in enumerate(unused)
                      if shape == key), None)
        if match is not None:
            record["layer"] = unused.pop(match)[0]
        else:
            record["layer"] = layer_of_tensor(record["tensor"])


def _check_header(content: bytes, where: str) -> None:
    size = len(content)
    if size < 16:
        raise TFLiteFileError(
            f"{where} is not a valid .tflite file: it is {size} bytes, too "
            "short for a TFLite flatbuffer. Export it again.")
    if bytes(content[4:8]) != b"TFL3":
        raise TFLiteFileError(
            f"{where} is not a valid .tflite file: its identifier is "
            f"{bytes(content[4:8])!r}, not b'TFL3' (not a TFLite model, or "
            "damaged). Check the path, or export it again.")
    root = int.from_bytes(bytes(content[:4]), "little")
    if not 8 <= root <= size - 4:
        raise TFLiteFileError(
            f"{where} is damaged: its root offset {root} lies outside the "
            f"file ({size} bytes). Export it again.")


def _index(value, count: int, what: str, where: str) -> int:
    value = int(value)
    if not 0 <= value < count:
        raise TFLiteFileError(
            f"{where} is damaged: {what} {value} is out of range (0-"
            f"{count - 1}). Export it again.")
    return value


class Flatbuffer:
    """A `.tflite` file's first subgraph, its op names and the producer of
    every tensor, for the readers below (checked: see the module)."""

    def __init__(self, content: bytes, where: str = "The .tflite content"):
        schema = _schema()
        _check_header(content, where)
        try:
            self.model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
        except _PARSE_ERRORS as error:
            raise TFLiteFileError(
                f"{where} is damaged (truncated, or an offset points outside "
                f"the file: {type(error).__name__}). Export it again."
            ) from None
        self._check(where)
        names = _op_names()
        custom = getattr(schema.BuiltinOperator, "CUSTOM", 32)
        self.codes: list[tuple[str, int]] = []
        for code in self.model.operatorCodes:
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            if builtin == custom:
                self.codes.append((_name(code.customCode) or "CUSTOM", code.version))
            else:
                self.codes.append((names.get(builtin, str(builtin)), code.version))
        self.graph = self.model.subgraphs[0]
        self.operators = list(self.graph.operators or [])
        self.producer = {}
        for index, op in enumerate(self.operators):
            for out in op.outputs if op.outputs is not None else []:
                self.producer[int(out)] = index

    def _check(self, where: str) -> None:
        """Every index the readers follow lies in range."""
        model = self.model
        if not model.subgraphs:
            raise TFLiteFileError(f"{where} is damaged: it has no subgraph. "
                                  "Export it again.")
        codes, buffers = len(model.operatorCodes or []), len(model.buffers or [])
        tensors = model.subgraphs[0].tensors or []
        for op in model.subgraphs[0].operators or []:
            _index(op.opcodeIndex, codes, "an op code index", where)
            for t in [*(op.inputs if op.inputs is not None else []),
                      *(op.outputs if op.outputs is not None else [])]:
                if int(t) != -1:
                    _index(t, len(tensors), "a tensor index", where)
        for tensor in tensors:
            if tensor.buffer:
                _index(tensor.buffer, buffers, "a buffer index", where)
            shape = [] if tensor.shape is None else [int(d) for d in tensor.shape]
            if any(d < 0 for d in shape) or np.prod(shape, dtype=float) > MAX_ELEMENTS:
                raise TFLiteFileError(
                    f"{where} is damaged: a tensor has the shape {shape}. "
                    "Export it again.")

    def op_name(self, op) -> str:
        return self.codes[op.opcodeIndex][0]

    def stored_bytes(self, t: int) -> int:
        tensor = self.graph.tensors[t]
        if tensor.buffer <= 0:
            return 0
        return _buffer_bytes(self.model.buffers[tensor.buffer])

    def source(self, t: int) -> tuple[int | None, list[str]]:
        """(stored tensor index, unpack ops) behind an op input: looks
        through DENSIFY / DEQUANTIZE to the constant they unpack."""
        chain = []
        while not self.stored_bytes(t):
            index = self.producer.get(t)
            if index is None:
                return None, chain
            op = self.operators[index]
            if self.op_name(op) not in UNPACK_OPS:
                return None, chain
            chain.append(self.op_name(op))
            t = int(op.inputs[0])
        return t, chain


def read_flatbuffer(content: bytes, keras_weights=(),
                    where: str = "The .tflite content"):
    """Per-weight encodings and op versions, read from the flatbuffer.

    Raises:
        TFLiteFileError: The content is not a whole TFLite model.
    """
    fb = Flatbuffer(content, where)
    try:
        return _encodings(fb, keras_weights)
    except _PARSE_ERRORS as error:
        raise TFLiteFileError(
            f"{where} is damaged: a tensor's encoding cannot be read "
            f"({type(error).__name__}: {error}). Export it again.") from None


#: Stored types that are not weights (paddings, shapes, axes, indices).
_NOT_WEIGHTS = ("int32", "int64", "bool")


def _zeros(fb: Flatbuffer, tensor, dtype: str, total: int) -> float | None:
    """Fraction of the tensor's values that are zero (None when the values
    are not in the file or not of a numeric type read here)."""
    buffer = fb.model.buffers[tensor.buffer]
    if buffer.data is None or dtype not in ("float32", "float16", "int8",
                                             "uint8", "int16"):
        return None
    values = np.frombuffer(bytes(bytearray(buffer.data)), dtype=dtype)
    if tensor.sparsity is None and values.size != total:
        return None
    return 1.0 - float(np.count_nonzero(values)) / total


def _encodings(fb: Flatbuffer, keras_weights):
    graph = fb.graph
    versions: dict[str, int] = {}
    for op_name, version in fb.codes:
        versions[op_name] = max(versions.get(op_name, 0), int(version))

    encodings = []
    for index, op in enumerate(fb.operators):
        op_name = fb.op_name(op)
        if op_name in UNPACK_OPS:
            continue
        for t in op.inputs if op.inputs is not None else []:
            t = int(t)
            if t < 0:
                continue
            stored, chain = fb.source(t)
            if stored is None:
                continue
            tensor = graph.tensors[stored]
            shape = tuple(int(s) for s in tensor.shape)
            if len(shape) < 2:
                continue  # biases, shapes, scalars
            dtype = TENSOR_TYPES.get(int(tensor.type), str(tensor.type))
            if dtype in _NOT_WEIGHTS:
                continue  # paddings, shapes, axes
            nbytes = fb.stored_bytes(stored)
            total = max(1, int(np.prod(shape)))
            itemsize = np.dtype(dtype).itemsize if dtype in (
                "float32", "float16", "int8", "int32", "uint8", "int16",
                "int64", "float64") else 1
            if tensor.sparsity is None:
                encoding, block = "dense", None
            else:
                encoding = "densify" if chain else "block_sparse"
                block = _block(tensor)
            tname = _name(tensor.name)
            encodings.append({
                "op": op_name, "op_index": index,
                "layer": "",
                "tensor": tname, "shape": shape, "dtype": dtype,
                "encoding": encoding, "block": block,
                "stored_fraction": min(1.0, nbytes / itemsize / total),
                "stored_bytes": nbytes,
                "zeros": _zeros(fb, tensor, dtype, total),
            })
    _name_layers(encodings, keras_weights)
    return encodings, versions, len(fb.operators)


def _decode_sparse(tensor, values: np.ndarray) -> np.ndarray:
    """Dense array of a tensor stored in TFLite's sparse format."""
    sparsity = tensor.sparsity
    shape = tuple(int(s) for s in tensor.shape)
    rank = len(shape)
    sizes = [int(m.denseSize) for m in sparsity.dimMetadata or []
             if int(m.format) == 0]
    if any(s < 0 for s in sizes) or np.prod(sizes, dtype=float) > MAX_ELEMENTS:
        raise TFLiteFileError(
            f"A sparse tensor of the .tflite file is damaged: its dense sizes "
            f"{sizes} do not fit its shape {list(shape)}. Export it again.")
    order = [int(t) for t in sparsity.traversalOrder]
    block_map = [] if sparsity.blockMap is None else [int(b) for b in sparsity.blockMap]
    position = np.zeros(1, dtype=np.int64)
    coords: list[np.ndarray] = []
    for meta in sparsity.dimMetadata:
        if int(meta.format) == 0:  # DENSE
            size = int(meta.denseSize)
            count = position.size
            position = (position[:, None] * size + np.arange(size)).ravel()
            coords = [np.repeat(c, size) for c in coords]
            coords.append(np.tile(np.arange(size), count))
        else:  # SPARSE_CSR
            segments = np.asarray(meta.arraySegments.values, dtype=np.int64)
            indices = np.asarray(meta.arrayIndices.values, dtype=np.int64)
            starts, ends = segments[position], segments[position + 1]
            lengths = ends - starts
            offsets = np.repeat(ends - lengths.cumsum(), lengths)
            position = np.arange(lengths.sum()) + offsets
            coords = [np.repeat(c, lengths) for c in coords]
            coords.append(indices[position])
    index = [np.zeros(position.size, dtype=np.int64) for _ in range(rank)]
    block_size = {d: 1 for d in range(rank)}
    for k, dim in enumerate(block_map):
        level = order.index(rank + k)
        block_size[dim] = int(sparsity.dimMetadata[level].denseSize)
    for level, dim in enumerate(order):
        if dim < rank:
            index[dim] += coords[level] * block_size[dim]
        else:
            index[block_map[dim - rank]] += coords[level]
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(index)] = values[: position.size]
    return dense


def read_tflite_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The weights of a `.tflite` file's FULLY_CONNECTED and CONV_2D ops.

    Read from the flatbuffer: dense buffers as they are, sparse ones
    decoded from their `traversal_order` / `block_map` / `dim_metadata`,
    looking through DENSIFY and DEQUANTIZE. Quantized weights come back as
    their stored integers (zeros stay zeros).

    Args:
        path: A `.tflite` file.

    Returns:
        `{"OP#index:tensor name": array in TFLite layout}`:
        FullyConnected `[out, in]`, Conv2D `[out, kh, kw, in]`.

    Example:

    >>> from keras_lottery.deploy.tflite.flatbuffer import read_tflite_weights
    >>> read_tflite_weights("model.tflite")  # doctest: +SKIP
    """
    path = check_path(path, must_exist=True)
    with open(path, "rb") as f:
        fb = Flatbuffer(f.read(), path)
    found = {}
    for index, op in enumerate(fb.operators):
        if fb.op_name(op) not in ("FULLY_CONNECTED", "CONV_2D"):
            continue
        stored, _ = fb.source(int(op.inputs[1]))
        if stored is None:
            continue
        tensor = fb.graph.tensors[stored]
        buffer = fb.model.buffers[tensor.buffer]
        dtype = TENSOR_TYPES.get(int(tensor.type))
        if buffer.data is None or dtype not in (
                "float32", "float16", "int8", "uint8", "int16"):
            continue
        values = np.frombuffer(bytes(bytearray(buffer.data)), dtype=dtype)
        try:
            if tensor.sparsity is not None:
                weight = _decode_sparse(tensor, values)
            else:
                weight = values.reshape([int(d) for d in tensor.shape])
        except _PARSE_ERRORS as error:
            raise TFLiteFileError(
                f"{path} is damaged: the weight {_name(tensor.name)!r} cannot "
                f"be read ({type(error).__name__}: {error}). Export it again."
            ) from None
        name = _name(tensor.name).split(";")[0]
        found[f"{fb.op_name(op)}#{index}:{name}"] = weight
    return found


__all__ = ["TFLiteFileError", "read_tflite_weights"]
