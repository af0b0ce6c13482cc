"""TFLite / LiteRT export: strip, convert sparse, read back, verify, time.

`export_tflite` writes a `.tflite` file whose pruned weights the converter
stores sparse (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`), then reads the
flatbuffer back to report, per weight tensor, how it was actually stored:

- ``block_sparse``: the weight stays sparse at run time and the op runs on
  TFLite's builtin sparse kernel (FullyConnected with 1x4 float or 1x16
  int8 blocks along the input axis): smaller and faster.
- ``densify``: the weight is stored sparse but a DENSIFY (or DEQUANTIZE) op
  expands it when the model loads: a smaller file, the same speed and the
  same memory at run time.
- ``dense``: stored as a plain dense array.

Conversion needs TensorFlow. A model on the JAX or PyTorch backend is saved
as `.keras` and converted by ``python -m keras_lottery.deploy.export`` in a child
process with ``KERAS_BACKEND=tensorflow``; reading, verifying and timing
the result only need `ai_edge_litert` and run in the calling process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_lottery.errors import KerasLotteryError

QUANTIZE_MODES = (None, "dynamic", "int8", "float16")

#: Largest accepted `max |tflite - keras| / max |keras|` over all outputs,
#: per quantization mode (checked by `export_tflite(verify=True)`).
TOLERANCES: dict[str | None, float] = {
    None: 1e-4,
    "float16": 1e-2,
    "dynamic": 5e-2,
    "int8": 1.5e-1,
}

#: Ops that only unpack a stored weight; the reader looks through them.
_UNPACK_OPS = ("DENSIFY", "DEQUANTIZE")

_VERIFY_SAMPLES = 8
_MAX_REPRESENTATIVE = 200

_TENSOR_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64",
    6: "bool", 7: "int16", 9: "int8", 10: "float64", 17: "int4",
}


class ExportError(KerasLotteryError, RuntimeError):
    """The converted model failed to load or to match the Keras model.

    Attributes:
        runtime: `"xnnpack"` or `"builtin"` when the failure is specific to
            one runtime, else None.

    Example:

    >>> from keras_lottery.deploy.export import ExportError
    >>> ExportError("outputs differ", runtime="xnnpack").runtime
    'xnnpack'
    """

    def __init__(self, message: str, *, runtime: str | None = None):
        super().__init__(message)
        self.runtime = runtime


# ----------------------------------------------------------------- schema
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


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter
    except ImportError as error:  # pragma: no cover - depends on install
        raise ImportError(
            "Running a .tflite file needs `ai-edge-litert`. Install it with: "
            "pip install 'keras-lottery[export]'."
        ) from error
    return interpreter


# ----------------------------------------------------------------- report
@dataclasses.dataclass(frozen=True)
class TensorEncoding:
    """How the converter stored one weight tensor of one op.

    Attributes:
        op: The op consuming the weight, e.g. `"FULLY_CONNECTED"`.
        op_index: Index of that op in the main subgraph.
        layer: The Keras layer the weight belongs to when known, else the
            first component of the tensor name.
        tensor: The name of the stored tensor in the flatbuffer.
        shape: Its shape in TFLite layout (FullyConnected: `[out, in]`).
        dtype: Its stored type (`"float32"`, `"int8"`, `"float16"`).
        encoding: `"block_sparse"`, `"densify"` or `"dense"` (see the
            module docstring).
        block: The sparse block shape in TFLite layout (`(1, 4)` is four
            consecutive inputs of one output unit), None when dense.
        stored_fraction: Fraction of the tensor's values actually stored.
        stored_bytes: Bytes of the stored values (indices excluded).
        xnnpack: Whether the op was delegated to XNNPACK when loaded with
            the default delegates; None when the model did not load.

    Example:

    >>> from keras_lottery.deploy.export import TensorEncoding
    >>> t = TensorEncoding("FULLY_CONNECTED", 0, "dense", "w", (4, 8),
    ...                    "float32", "block_sparse", (1, 4), 0.1, 13, False)
    >>> t.describe()
    'block-sparse 1x4'
    """

    op: str
    op_index: int
    layer: str
    tensor: str
    shape: tuple[int, ...]
    dtype: str
    encoding: str
    block: tuple[int, ...] | None
    stored_fraction: float
    stored_bytes: int
    xnnpack: bool | None

    def describe(self) -> str:
        """A short human description of the encoding."""
        if self.encoding == "dense":
            return "dense"
        block = "x".join(str(b) for b in self.block or ())
        if self.encoding == "block_sparse":
            return f"block-sparse {block}"
        return f"sparse {block} + densify"


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What `export_tflite` wrote, read back from the file itself.

    Attributes:
        path: The `.tflite` file.
        file_bytes: Its size.
        dense_bytes: Size of the same model converted without
            `EXPERIMENTAL_SPARSITY` (same quantization), for comparison;
            None when unknown (`inspect_tflite`).
        quantize: The quantization mode.
        sparse: Whether the written file uses the sparse encoding.
        tensors: One `TensorEncoding` per weight tensor of each op.
        op_versions: `{op name: highest version}` over the model's ops.
        xnnpack: `"all"`, `"partial"`, `"none"` (ops the XNNPACK delegate
            took when loaded with the default delegates) or `"load fails"`.
        xnnpack_error: The load error under XNNPACK, if any.
        max_error: `{"xnnpack": e, "builtin": e}`: the largest
            `max |tflite - keras| / max |keras|` over the outputs of the
            verification inputs; empty when not verified.
        tolerance: The tolerance the errors were checked against.
        backend: The Keras backend the model came from.
        notes: Decisions taken and warnings, in words.

    Example:

    >>> import keras_lottery as kl
    >>> report = kl.inspect_tflite("model.tflite")  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    """

    path: str
    file_bytes: int
    dense_bytes: int | None
    quantize: str | None
    sparse: bool
    tensors: tuple[TensorEncoding, ...]
    op_versions: dict[str, int]
    xnnpack: str
    xnnpack_error: str | None = None
    max_error: dict[str, float] = dataclasses.field(default_factory=dict)
    tolerance: float | None = None
    backend: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def size_ratio(self) -> float | None:
        """`file_bytes / dense_bytes`, or None without a dense size."""
        if not self.dense_bytes:
            return None
        return self.file_bytes / self.dense_bytes

    def by_layer(self) -> dict[str, TensorEncoding]:
        """The first weight encoding of each layer, keyed by layer."""
        found: dict[str, TensorEncoding] = {}
        for tensor in self.tensors:
            found.setdefault(tensor.layer, tensor)
        return found

    def to_dict(self) -> dict[str, Any]:
        """The report as plain, JSON-able Python data."""
        data = dataclasses.asdict(self)
        data["tensors"] = [
            {**dataclasses.asdict(t), "shape": list(t.shape),
             "block": list(t.block) if t.block else None}
            for t in self.tensors
        ]
        data["notes"] = list(self.notes)
        data["size_ratio"] = self.size_ratio
        return data

    def to_json(self, **kwargs) -> str:
        """The report as a JSON string (`kwargs` go to `json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        header = ("Layer", "Op", "Shape", "Type", "Encoding", "Stored",
                  "Bytes", "XNNPACK")
        rows = [
            (t.layer, t.op, "x".join(map(str, t.shape)), t.dtype,
             t.describe(), f"{100 * t.stored_fraction:.1f}%",
             f"{t.stored_bytes:,}",
             "-" if t.xnnpack is None else ("yes" if t.xnnpack else "no"))
            for t in self.tensors
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(8)]

        def fmt(row):
            return "  ".join(
                c.rjust(w) if i in (5, 6) else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths))
            ).rstrip()

        lines = [f"TFLite model {self.path}", fmt(header),
                 "  ".join("-" * w for w in widths)]
        lines += [fmt(r) for r in rows]
        size = f"File: {self.file_bytes:,} bytes"
        if self.dense_bytes:
            size += (f"; dense export: {self.dense_bytes:,} bytes "
                     f"({100 * self.size_ratio:.1f}%)")
        lines.append(size)
        lines.append(
            f"Quantization: {self.quantize or 'none (float32)'}; sparse "
            f"encoding: {'yes' if self.sparse else 'no'}"
        )
        xnn = f"XNNPACK: {self.xnnpack}"
        if self.xnnpack_error:
            xnn += f" ({self.xnnpack_error})"
        lines.append(xnn)
        lines.append("Op versions: " + ", ".join(
            f"{k} v{v}" for k, v in sorted(self.op_versions.items())))
        if self.max_error:
            lines.append("Verified: " + ", ".join(
                f"{k} max rel. error {v:.2e}"
                for k, v in self.max_error.items()
            ) + f" (tolerance {self.tolerance:g})")
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)


# ------------------------------------------------------------ flatbuffer
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


def _keras_weights(model) -> list[tuple[str, tuple[int, ...]]]:
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
    weights of the same shape, in graph order.
    """
    unused = list(keras_weights)
    for record in encodings:
        key = tuple(sorted(record["shape"]))
        match = next((i for i, (_, shape) in enumerate(unused)
                      if shape == key), None)
        if match is not None:
            record["layer"] = unused.pop(match)[0]
        else:
            first = record["tensor"].split(";")[0]
            record["layer"] = first.rsplit("/", 1)[0] if "/" in first else first


class _Flatbuffer:
    """A `.tflite` file's first subgraph, its op names and the producer of
    every tensor, for the readers below."""

    def __init__(self, content: bytes):
        schema = _schema()
        self.model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
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
            if self.op_name(op) not in _UNPACK_OPS:
                return None, chain
            chain.append(self.op_name(op))
            t = int(op.inputs[0])
        return t, chain


def _read_flatbuffer(content: bytes, keras_weights=()):
    """Per-weight encodings and op versions, read from the flatbuffer."""
    fb = _Flatbuffer(content)
    graph = fb.graph
    versions: dict[str, int] = {}
    for op_name, version in fb.codes:
        versions[op_name] = max(versions.get(op_name, 0), int(version))

    encodings = []
    for index, op in enumerate(fb.operators):
        op_name = fb.op_name(op)
        if op_name in _UNPACK_OPS:
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
            dtype = _TENSOR_TYPES.get(int(tensor.type), str(tensor.type))
            nbytes = fb.stored_bytes(stored)
            total = int(np.prod(shape))
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
            })
    _name_layers(encodings, keras_weights)
    return encodings, versions, len(fb.operators)


def _decode_sparse(tensor, values: np.ndarray) -> np.ndarray:
    """Dense array of a tensor stored in TFLite's sparse format."""
    sparsity = tensor.sparsity
    shape = tuple(int(s) for s in tensor.shape)
    rank = len(shape)
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

    >>> from keras_lottery.deploy.export import read_tflite_weights
    >>> read_tflite_weights("model.tflite")  # doctest: +SKIP
    """
    path = _check_path(path, must_exist=True)
    with open(path, "rb") as f:
        fb = _Flatbuffer(f.read())
    found = {}
    for index, op in enumerate(fb.operators):
        if fb.op_name(op) not in ("FULLY_CONNECTED", "CONV_2D"):
            continue
        stored, _ = fb.source(int(op.inputs[1]))
        if stored is None:
            continue
        tensor = fb.graph.tensors[stored]
        buffer = fb.model.buffers[tensor.buffer]
        dtype = _TENSOR_TYPES.get(int(tensor.type))
        if buffer.data is None or dtype not in (
                "float32", "float16", "int8", "uint8", "int16"):
            continue
        values = np.frombuffer(bytes(bytearray(buffer.data)), dtype=dtype)
        if tensor.sparsity is not None:
            weight = _decode_sparse(tensor, values)
        else:
            weight = values.reshape([int(d) for d in tensor.shape])
        name = _name(tensor.name).split(";")[0]
        found[f"{fb.op_name(op)}#{index}:{name}"] = weight
    return found


# ------------------------------------------------------------- interpreter
def _load(content: bytes, *, xnnpack: bool, threads: int | None = None):
    module = _interpreter_module()
    resolver = (module.OpResolverType.AUTO if xnnpack else
                module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter = module.Interpreter(
        model_content=bytes(content), num_threads=threads,
        experimental_op_resolver_type=resolver,
    )
    interpreter.allocate_tensors()
    return interpreter


def _delegated_ops(interpreter, num_ops: int) -> set[int]:
    """Indices of the model's ops that a delegate took over.

    After delegation the interpreter keeps the original nodes and appends
    one DELEGATE node per partition; the ops of a partition are those
    between the DELEGATE node's outputs and its inputs.
    """
    details = interpreter._get_ops_details()
    producer = {}
    for d in details[:num_ops]:
        for out in d["outputs"]:
            producer[int(out)] = d["index"]
    taken: set[int] = set()
    for d in details[num_ops:]:
        if d["op_name"] != "DELEGATE":
            continue
        stop = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        while stack:
            t = stack.pop()
            if t in stop or t not in producer or producer[t] in taken:
                continue
            taken.add(producer[t])
            stack.extend(int(i) for i in details[producer[t]]["inputs"]
                         if int(i) >= 0)
    return taken


def _first_line(error: BaseException) -> str:
    text = str(error).strip().replace("\n", " ")
    return text if len(text) < 300 else text[:297] + "..."


def _analyse(content: bytes, keras_weights=()):
    """Encodings, op versions and XNNPACK placement of a model."""
    raw, versions, num_ops = _read_flatbuffer(content, keras_weights)
    xnn_error = None
    try:
        taken = _delegated_ops(_load(content, xnnpack=True), num_ops)
    except (RuntimeError, ValueError) as error:
        taken, xnn_error = None, _first_line(error)
    tensors = tuple(
        TensorEncoding(**r, xnnpack=None if taken is None
                       else r["op_index"] in taken)
        for r in raw
    )
    if taken is None:
        placement = "load fails"
    elif len(taken) == num_ops:
        placement = "all"
    elif taken:
        placement = "partial"
    else:
        placement = "none"
    return tensors, versions, placement, xnn_error


def inspect_tflite(path: str | os.PathLike) -> ExportReport:
    """Reads how a `.tflite` file stores its weights and where it runs.

    The encodings come from the flatbuffer itself (tensor `sparsity`:
    `traversal_order`, `block_map`, `dim_metadata`), the XNNPACK placement
    from loading the model with the default delegates.

    Args:
        path: A `.tflite` file.

    Returns:
        An `ExportReport` without a dense size or verification.

    Raises:
        ValueError: If `path` is not an existing `.tflite` file.

    Example:

    >>> import keras_lottery as kl
    >>> print(kl.inspect_tflite("model.tflite"))  # doctest: +SKIP
    """
    path = _check_path(path, must_exist=True)
    content = Path(path).read_bytes()
    tensors, versions, placement, xnn_error = _analyse(content)
    return ExportReport(
        path=path, file_bytes=len(content), dense_bytes=None, quantize=None
        if not any(t.dtype == "int8" for t in tensors) else "int8 or dynamic",
        sparse=any(t.encoding != "dense" for t in tensors), tensors=tensors,
        op_versions=versions, xnnpack=placement, xnnpack_error=xnn_error,
    )


# ------------------------------------------------------------- validation
def _check_path(path, *, must_exist: bool = False) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "`path` must be a str or os.PathLike naming a .tflite file. "
            f"Received: path={path!r} of type {type(path).__name__}."
        )
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(
            "`path` must end with '.tflite', the extension LiteRT tools "
            f"expect. Received: path={path!r}. Use e.g. 'model.tflite'."
        )
    if must_exist and not os.path.isfile(path):
        raise ValueError(f"No .tflite file at the given path. Received: "
                         f"path={path!r}.")
    return path


def _check_model(model) -> keras.Model:
    from keras_lottery.core.model import check_model, strip, wrappers

    check_model(model)
    if wrappers(model):
        model = strip(model)
    return _with_inputs(model)


def _with_inputs(model) -> keras.Model:
    """A subclassed model, as a functional one with symbolic inputs.

    The conversion and the checks read `model.inputs`, which a subclassed
    model does not have; its input shape comes from its build config.
    """
    try:
        if model.inputs:
            return model
    except (AttributeError, ValueError):
        pass
    shape = (model.get_build_config() or {}).get("input_shape")
    if not isinstance(shape, (list, tuple)) or not shape or isinstance(
            shape[0], (list, tuple, dict)):
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) has no symbolic "
            "inputs and no single input shape to give it one. Export "
            "keras.Model(inputs, model(inputs)) built on keras.Input(...) "
            "instead."
        )
    inputs = keras.Input(tuple(shape[1:]), batch_size=None)
    return keras.Model(inputs, model(inputs), name=model.name)


def _input_specs(model) -> list[tuple[tuple, str]]:
    specs = []
    for tensor in model.inputs:
        specs.append((tuple(tensor.shape), str(tensor.dtype)))
    return specs


def _normalize_data(data, model, what: str) -> list[np.ndarray]:
    """Representative or sample data as one array per model input."""
    specs = _input_specs(model)
    if callable(data):
        samples = []
        for i, sample in enumerate(data()):
            if i >= _MAX_REPRESENTATIVE:
                break
            samples.append(sample)
        if not samples:
            raise ValueError(f"`{what}` yielded no samples. Received: "
                             f"{what}={data!r}.")
        first = samples[0]
        if isinstance(first, dict):
            data = {k: np.concatenate([np.asarray(s[k]) for s in samples])
                    for k in first}
        else:
            seqs = [s if isinstance(s, (list, tuple)) else [s] for s in samples]
            data = [np.concatenate([np.asarray(s[i]) for s in seqs])
                    for i in range(len(seqs[0]))]
    if isinstance(data, dict):
        names = [t.name for t in model.inputs]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(
                f"`{what}` is a dict but lacks the model inputs {missing}. "
                f"Received keys: {sorted(data)}."
            )
        arrays = [data[n] for n in names]
    elif isinstance(data, (list, tuple)) and len(specs) > 1:
        arrays = list(data)
    elif isinstance(data, (list, tuple)) and len(data) == 1 and np.ndim(
            data[0]) == len(specs[0][0]):
        arrays = [data[0]]
    else:
        arrays = [data]
    try:
        arrays = [np.asarray(a) for a in arrays]
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{what}` must be a NumPy array (one per model input), a "
            f"list/dict of them or a generator function. Received: "
            f"{what} of type {type(data).__name__}."
        ) from error
    if len(arrays) != len(specs):
        raise ValueError(
            f"The model has {len(specs)} inputs, `{what}` gives "
            f"{len(arrays)} arrays. Pass one array per input."
        )
    out = []
    for array, (shape, dtype) in zip(arrays, specs):
        if array.dtype == object or array.ndim != len(shape) or any(
            s is not None and s != a for s, a in zip(shape[1:], array.shape[1:])
        ):
            raise ValueError(
                f"`{what}` must hold a batch of model inputs of shape "
                f"{shape} (first axis: samples). Received: array of shape "
                f"{array.shape}."
            )
        out.append(array.astype(dtype))
    return out


def _sample_inputs(model) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = []
    for shape, dtype in _input_specs(model):
        full = (_VERIFY_SAMPLES, *[1 if s is None else s for s in shape[1:]])
        if "int" in dtype:
            arrays.append(rng.integers(0, 2, size=full).astype(dtype))
        else:
            arrays.append(rng.standard_normal(full).astype(dtype))
    return arrays


# -------------------------------------------------------------- conversion
def _converter_kwargs(sparse: bool, quantize: str | None,
                      representative: list[np.ndarray] | None,
                      select_tf_ops: bool) -> dict[str, Any]:
    import tensorflow as tf

    optimizations = []
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if quantize:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "int8":
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if select_tf_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    target_spec: dict[str, Any] = {"supported_ops": ops}
    if quantize == "float16":
        target_spec["supported_types"] = [tf.float16]
    kwargs: dict[str, Any] = {"optimizations": optimizations,
                              "target_spec": target_spec}
    if quantize == "int8":
        count = len(representative[0])

        def dataset():
            for i in range(count):
                yield [a[i:i + 1] for a in representative]

        kwargs["representative_dataset"] = dataset
    return kwargs


def _convert_here(model, *, sparse: bool, quantize: str | None,
                  representative, select_tf_ops: bool) -> bytes:
    """Converts a model on the TensorFlow backend, returning the bytes."""
    kwargs = _converter_kwargs(sparse, quantize, representative,
                               select_tf_ops)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.tflite")
        model.export(out, format="litert", verbose=False, **kwargs)
        return Path(out).read_bytes()


def _custom_modules(model) -> list[str]:
    """Modules defining the model's non-Keras layer classes."""
    modules = set()

    def visit(layer):
        module = type(layer).__module__
        if not module.startswith(("keras.", "keras_lottery.")):
            modules.add(module)
        for child in getattr(layer, "layers", []):
            visit(child)
        inner = getattr(layer, "layer", None)
        if isinstance(inner, keras.layers.Layer):
            visit(inner)

    visit(model)
    modules.discard("__main__")
    return sorted(modules)


def _convert_in_child(model, *, variants: dict[str, bool], quantize,
                      representative, select_tf_ops) -> dict[str, bytes]:
    """Saves `model` as .keras and converts it under KERAS_BACKEND=tensorflow."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "model.keras")
        model.save(saved)
        args = [sys.executable, "-m", "keras_lottery.deploy.export", "convert",
                saved, "--out-dir", tmp, "--error-file",
                os.path.join(tmp, "error.json")]
        for name, sparse in variants.items():
            args += ["--variant", f"{name}={'sparse' if sparse else 'dense'}"]
        if quantize:
            args += ["--quantize", quantize]
        if representative is not None:
            rep = os.path.join(tmp, "representative.npz")
            np.savez(rep, *representative)
            args += ["--representative", rep]
        if select_tf_ops:
            args.append("--select-tf-ops")
        for module in _custom_modules(model):
            args += ["--import", module]
        env = dict(os.environ, KERAS_BACKEND="tensorflow",
                   TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        done = subprocess.run(args, env=env, capture_output=True, text=True,
                              check=False)
        error_file = os.path.join(tmp, "error.json")
        if done.returncode != 0:
            if os.path.isfile(error_file):
                info = json.loads(Path(error_file).read_text())
                kind = {"ValueError": ValueError, "TypeError": TypeError,
                        "ImportError": ImportError}.get(info["type"],
                                                        ExportError)
                raise kind(info["message"])
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise ExportError(
                "The TensorFlow child process converting the model exited "
                f"with status {done.returncode}. Its last output:\n{tail}"
            )
        return {name: Path(tmp, f"{name}.tflite").read_bytes()
                for name in variants}


def _conversion_error(error: Exception, select_tf_ops: bool) -> ValueError:
    """A readable ValueError from the converter's MLIR diagnostics."""
    text = str(error)
    ops = dict.fromkeys(re.findall(
        r"'(tf\.\w+)' op is neither a custom op nor a flex op", text))
    ops.update(dict.fromkeys(re.findall(
        r"'(tf\.\w+)' op is not supported", text)))
    where = dict.fromkeys(re.findall(r'fused\["\w+:", "([^"@]+)@', text))
    if ops:
        detail = (f"Ops TFLite builtins lack: {', '.join(ops)}"
                  + (f" (at {', '.join(list(where)[:4])})" if where else "")
                  + ".")
    else:
        detail = "Converter said: " + _first_line(error)
    hint = ("" if select_tf_ops else
            " Replace the layer with one built from ops TFLite has (see "
            "https://ai.google.dev/edge/litert/models/ops_compatibility), or "
            "pass select_tf_ops=True to embed TensorFlow ops (the app then "
            "needs the Flex delegate, several MB).")
    return ValueError(
        "The TFLite converter could not express this model with builtin ops "
        f"only. {detail}{hint}"
    )


def _convert(model, *, variants: dict[str, bool], quantize,
             representative, select_tf_ops) -> dict[str, bytes]:
    if keras.backend.backend() != "tensorflow":
        return _convert_in_child(model, variants=variants, quantize=quantize,
                                 representative=representative,
                                 select_tf_ops=select_tf_ops)
    out = {}
    for name, sparse in variants.items():
        try:
            out[name] = _convert_here(model, sparse=sparse, quantize=quantize,
                                      representative=representative,
                                      select_tf_ops=select_tf_ops)
        except Exception as error:
            if type(error).__name__ == "ConverterError" or (
                "converter" in str(error).lower()
            ):
                raise _conversion_error(error, select_tf_ops) from error
            raise
    return out


# ------------------------------------------------------------ verification
def _run(interpreter, inputs: list[np.ndarray], names: list[str]):
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()
    if len(details) == 1:
        feed = {next(iter(details)): inputs[0]}
    else:
        feed = {}
        for name, array in zip(names, inputs):
            if name not in details:
                raise ExportError(
                    f"The .tflite signature has inputs {sorted(details)}, "
                    f"which do not include the model input '{name}'."
                )
            feed[name] = array
    result = runner(**feed)
    keys = sorted(result, key=lambda k: (len(k), k))
    return [np.asarray(result[k]) for k in keys]


def _reference(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from keras import ops

    outputs = model(inputs[0] if len(inputs) == 1 else inputs,
                    training=False)
    return [np.asarray(ops.convert_to_numpy(o))
            for o in keras.tree.flatten(outputs)]


def _verify(content: bytes, model, inputs, quantize, xnnpack_loads: bool):
    tolerance = TOLERANCES[quantize]
    expected = _reference(model, inputs)
    names = [t.name for t in model.inputs]
    errors = {}
    for label, xnnpack in (("xnnpack", True), ("builtin", False)):
        if xnnpack and not xnnpack_loads:
            continue
        try:
            got = _run(_load(content, xnnpack=xnnpack), inputs, names)
        except (RuntimeError, ValueError) as error:
            where = ("the default delegates (XNNPACK)" if xnnpack
                     else "the builtin kernels")
            raise ExportError(
                f"The converted model fails to run with {where}: "
                f"{_first_line(error)}", runtime=label,
            ) from error
        if len(got) != len(expected):
            raise ExportError(
                f"The .tflite model has {len(got)} outputs, the Keras model "
                f"{len(expected)}."
            )
        worst = 0.0
        for a, b in zip(got, expected):
            if a.shape != b.shape:
                raise ExportError(
                    f"Output shape {a.shape} of the .tflite model differs "
                    f"from the Keras model's {b.shape}."
                )
            scale = max(float(np.max(np.abs(b))), 1e-3)
            worst = max(worst, float(np.max(np.abs(a.astype("float64") -
                                                    b))) / scale)
        errors[label] = worst
        if not worst <= tolerance:
            raise ExportError(
                f"The .tflite model's outputs differ from the Keras model's "
                f"({label} kernels): max |tflite - keras| / max |keras| = "
                f"{worst:.3g}, above the tolerance {tolerance:g} for "
                f"quantize={quantize!r}. For int8, pass representative_data "
                "drawn from the real input distribution.", runtime=label,
            )
    return errors, tolerance


# ------------------------------------------------------------------ export
def _write_atomically(path: str, content: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".tflite.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    sparse: bool = True,
    quantize: str | None = None,
    representative_data: Any = None,
    verify: bool = True,
    select_tf_ops: bool = False,
) -> ExportReport:
    """Exports a (pruned) model to a sparse-encoded, verified `.tflite` file.

    Wrappers are stripped first (pruned weights become exact zeros). The
    model is converted through `Model.export(format="litert")` with
    `tf.lite.Optimize.EXPERIMENTAL_SPARSITY` and builtin ops only, once
    sparse and once dense (for the size comparison). The file written is
    the sparse one unless that would be a mistake, explained in
    `report.notes`:

    - the sparse file is not smaller than the dense one (unstructured
      int8 below about 70% sparsity: indices cost more than they save);
    - the sparse file fails to load under XNNPACK, the default delegate
      (int8 or dynamic-range weights whose zeros are not in 1x16 blocks
      get DENSIFY ops that XNNPACK rejects).

    On the JAX and PyTorch backends the conversion runs in a child process
    on the TensorFlow backend (the model goes through a temporary `.keras`
    file; custom layers must be registered serializables in an importable
    module).

    Args:
        model: A built Sequential, functional or subclassed model, wrapped
            by `keras_lottery.wrap` or not.
        path: Where to write; must end with `.tflite`. Written atomically:
            a failed export leaves no file there.
        sparse: Let the converter store weights with >= 30% zeros sparse.
        quantize: None (float32), `"dynamic"` (int8 weights, float
            activations), `"int8"` (int8 weights and activations; float
            input and output; needs `representative_data`) or
            `"float16"` (float16 weights).
        representative_data: Inputs for int8 calibration and for the
            verification: an array (one sample per row), a list or dict of
            arrays for several inputs, or a generator function yielding
            samples as TensorFlow's `representative_dataset` does.
        verify: Run the file in LiteRT's interpreter with the default
            delegates (XNNPACK) and without, and compare its outputs with
            the Keras model's (see `TOLERANCES`).
        select_tf_ops: Allow TensorFlow ops the builtins lack (needs the
            Flex delegate at run time; not verifiable with `ai_edge_litert`).

    Returns:
        An `ExportReport`.

    Raises:
        TypeError: For a non-model, a path or data of the wrong type.
        ValueError: For a bad path or quantize mode, an unbuilt model,
            missing int8 data, or a layer TFLite builtins cannot express.
        ExportError: If the file fails to load or its outputs mismatch.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> report = kl.export_tflite(model, "m.tflite")  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    """
    path = _check_path(path)
    if not isinstance(sparse, bool):
        raise TypeError(f"`sparse` must be True or False. Received: "
                        f"sparse={sparse!r}.")
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"`quantize` must be one of {QUANTIZE_MODES}. Received: "
            f"quantize={quantize!r}."
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' calibrates activation ranges on sample inputs, "
            "so it needs representative data. Received: "
            "representative_data=None. Pass about 100 real inputs, e.g. "
            "representative_data=x_train[:100], or use quantize='dynamic', "
            "which needs none."
        )
    model = _check_model(model)
    representative = None
    if representative_data is not None:
        representative = _normalize_data(representative_data, model,
                                         "representative_data")
        representative = [a[:_MAX_REPRESENTATIVE] for a in representative]
    if select_tf_ops and verify:
        raise ValueError(
            "select_tf_ops=True embeds TensorFlow (Flex) ops, which "
            "ai_edge_litert's interpreter cannot run, so the file cannot be "
            "verified. Pass verify=False together with select_tf_ops=True."
        )
    variants = {"dense": False}
    if sparse:
        variants["sparse"] = True
    converted = _convert(model, variants=variants, quantize=quantize,
                         representative=representative,
                         select_tf_ops=select_tf_ops)
    dense = converted["dense"]
    keras_weights = _keras_weights(model)
    notes: list[str] = []
    content, used_sparse = dense, False
    if sparse:
        candidate = converted["sparse"]
        tensors, _, placement, xnn_error = _analyse(candidate, keras_weights)
        if not any(t.encoding != "dense" for t in tensors):
            notes.append(
                "No weight has >= 30% zeros, the converter's threshold for "
                "a sparse encoding: the file is the dense export."
            )
        elif placement == "load fails":
            notes.append(
                "The sparse encoding fails to load under XNNPACK, LiteRT's "
                f"default delegate ({xnn_error}). For {quantize} weights "
                "XNNPACK cannot prepare DENSIFY ops, which the converter "
                "emits for zeros not in 1x16 blocks along the input axis. "
                "Wrote the dense encoding instead. To keep the sparse one, "
                "prune Dense kernels in 1x16 blocks (kernel[i:i+16, j]) or "
                "use quantize=None or 'float16'."
            )
        elif len(candidate) >= len(dense):
            notes.append(
                f"The sparse encoding ({len(candidate):,} bytes) is not "
                f"smaller than the dense one ({len(dense):,} bytes): sparse "
                "indices cost more than the zeros they save (typical of "
                "unstructured int8 below about 70% sparsity). Wrote the "
                "dense encoding."
            )
        else:
            content, used_sparse = candidate, True
    errors, tolerance = {}, None
    if verify:
        if representative is not None:
            inputs = [a[:_VERIFY_SAMPLES] for a in representative]
        else:
            inputs = _sample_inputs(model)
        try:
            errors, tolerance = _verify(content, model, inputs, quantize,
                                        xnnpack_loads=True)
        except ExportError as error:
            if not used_sparse or error.runtime != "xnnpack":
                raise
            notes.append(
                "The sparse encoding gives wrong outputs under XNNPACK, "
                f"LiteRT's default delegate ({error}). Wrote the dense "
                "encoding instead."
            )
            content, used_sparse = dense, False
            errors, tolerance = _verify(content, model, inputs, quantize,
                                        xnnpack_loads=True)
    elif used_sparse and quantize == "dynamic":
        notes.append(
            "Not verified: block-sparse dynamic-range weights have given "
            "wrong outputs under XNNPACK (measured on LiteRT 2.3); export "
            "with verify=True to check this model."
        )
    tensors, versions, placement, xnn_error = _analyse(content, keras_weights)
    if placement == "load fails":
        raise ExportError(
            f"The converted model fails to load under XNNPACK, LiteRT's "
            f"default delegate: {xnn_error}. Received: quantize={quantize!r}, "
            f"sparse={sparse!r}."
        )
    if any(t.encoding == "block_sparse" and t.op == "FULLY_CONNECTED"
           for t in tensors) and any(
            t.encoding != "block_sparse" and t.op == "FULLY_CONNECTED"
            for t in tensors):
        notes.append(
            "Some FullyConnected weights are block-sparse and others not: "
            "see the XNNPACK column. Block-prune all Dense layers or none "
            "to keep every FullyConnected on one fast path."
        )
    _write_atomically(path, content)
    return ExportReport(
        path=path, file_bytes=len(content), dense_bytes=len(dense),
        quantize=quantize, sparse=used_sparse, tensors=tensors,
        op_versions=versions, xnnpack=placement, xnnpack_error=xnn_error,
        max_error=errors, tolerance=tolerance,
        backend=keras.backend.backend(), notes=tuple(notes),
    )


# --------------------------------------------------------------- benchmark
@dataclasses.dataclass(frozen=True)
class Latency:
    """Median latency of one `.tflite` model at one batch size.

    Attributes:
        batch_size: Rows per invoke.
        xnnpack_ms: Median milliseconds per invoke with the default
            delegates (XNNPACK); None if the model does not load that way.
        builtin_ms: Median milliseconds per invoke on the builtin kernels.

    Example:

    >>> from keras_lottery.deploy.export import Latency
    >>> Latency(1, 0.5, 1.0).speedup
    2.0
    """

    batch_size: int
    xnnpack_ms: float | None
    builtin_ms: float

    @property
    def speedup(self) -> float | None:
        """`builtin_ms / xnnpack_ms`, or None."""
        return None if not self.xnnpack_ms else self.builtin_ms / self.xnnpack_ms


def _time_invoke(content: bytes, batch: int, *, xnnpack: bool, threads: int,
                 runs: int, warmup: int) -> float:
    interpreter = _load(content, xnnpack=xnnpack, threads=threads)
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        shape = [batch, *[max(int(s), 1) for s in detail["shape_signature"][1:]]]
        interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        value = rng.standard_normal(detail["shape"]).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def benchmark_tflite(
    path: str | os.PathLike,
    batch_sizes: Sequence[int] = (1, 32),
    threads: int = 1,
    *,
    runs: int = 50,
    warmup: int = 5,
) -> list[Latency]:
    """Median invoke latency with and without XNNPACK, per batch size.

    The input's batch dimension is resized to each batch size; inputs are
    random normal. Each figure is the median of `runs` timed invokes
    after `warmup` untimed ones, in this process.

    Args:
        path: A `.tflite` file.
        batch_sizes: Batch sizes to time.
        threads: Interpreter threads.
        runs: Timed invokes per figure.
        warmup: Untimed invokes first.

    Returns:
        One `Latency` per batch size.

    Example:

    >>> import keras_lottery as kl
    >>> for row in kl.benchmark_tflite("m.tflite"):  # doctest: +SKIP
    ...     print(row.batch_size, row.xnnpack_ms, row.builtin_ms)
    """
    path = _check_path(path, must_exist=True)
    sizes = [batch_sizes] if isinstance(batch_sizes, int) else list(batch_sizes)
    if not sizes or any(not isinstance(b, int) or b < 1 for b in sizes):
        raise ValueError(f"`batch_sizes` must be positive integers. "
                         f"Received: batch_sizes={batch_sizes!r}.")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"`threads` must be a positive integer. Received: "
                         f"threads={threads!r}.")
    content = Path(path).read_bytes()
    results = []
    for batch in sizes:
        builtin = _time_invoke(content, batch, xnnpack=False, threads=threads,
                               runs=runs, warmup=warmup)
        try:
            xnn = _time_invoke(content, batch, xnnpack=True, threads=threads,
                               runs=runs, warmup=warmup)
        except (RuntimeError, ValueError):
            xnn = None
        results.append(Latency(batch, xnn, builtin))
    return results


# ------------------------------------------------------------ child process
def _child_main(argv: Sequence[str] | None = None) -> int:
    """`python -m keras_lottery.deploy.export convert ...` (internal protocol)."""
    parser = argparse.ArgumentParser(prog="python -m keras_lottery.deploy.export")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert")
    convert.add_argument("model")
    convert.add_argument("--out-dir", required=True)
    convert.add_argument("--error-file", required=True)
    convert.add_argument("--variant", action="append", default=[])
    convert.add_argument("--quantize", default=None)
    convert.add_argument("--representative", default=None)
    convert.add_argument("--select-tf-ops", action="store_true")
    convert.add_argument("--import", dest="imports", action="append",
                         default=[])
    args = parser.parse_args(argv)
    try:
        if keras.backend.backend() != "tensorflow":
            raise ExportError(
                "The conversion child process must run with "
                f"KERAS_BACKEND=tensorflow; it has {keras.backend.backend()}."
            )
        for module in args.imports:
            try:
                importlib.import_module(module)
            except ImportError as error:
                raise ImportError(
                    f"The model uses layers from module '{module}', which "
                    "the TensorFlow conversion process cannot import "
                    f"({error}). Make the module importable, or convert on "
                    "the TensorFlow backend."
                ) from error
        # The file was written a moment ago by the parent, from the user's
        # own in-memory model; it may hold Lambda layers.
        model = keras.saving.load_model(args.model, safe_mode=False)
        try:
            rebuilt = model.built and bool(model.inputs)
        except (AttributeError, ValueError):
            rebuilt = False
        if not rebuilt:
            raise ValueError(
                "The model saved to .keras could not be rebuilt on the "
                "TensorFlow backend for conversion (a Lambda layer whose "
                "function uses global names does not survive saving). Use a "
                "custom layer registered with "
                "keras.saving.register_keras_serializable, or build the "
                "model on the TensorFlow backend."
            )
        representative = None
        if args.representative:
            with np.load(args.representative) as data:
                representative = [data[f"arr_{i}"] for i in range(len(data))]
        variants = dict(v.split("=", 1) for v in args.variant)
        out = _convert(model, variants={k: v == "sparse"
                                        for k, v in variants.items()},
                       quantize=args.quantize, representative=representative,
                       select_tf_ops=args.select_tf_ops)
        for name, content in out.items():
            Path(args.out_dir, f"{name}.tflite").write_bytes(content)
    except Exception as error:
        Path(args.error_file).write_text(json.dumps(
            {"type": type(error).__name__, "message": str(error)}))
        return 1
    return 0


__all__ = [
    "QUANTIZE_MODES",
    "TOLERANCES",
    "ExportError",
    "ExportReport",
    "Latency",
    "TensorEncoding",
    "benchmark_tflite",
    "export_tflite",
    "inspect_tflite",
    "read_tflite_weights",
]

if __name__ == "__main__":
    sys.exit(_child_main())
