"""What an export wrote: per-tensor encodings, sizes, placement, errors."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from keras_lottery._internal.io import text_table
from keras_lottery.errors import KerasLotteryError


class ExportError(KerasLotteryError, RuntimeError):
    """The converted model failed to load or to match the Keras model.

    Attributes:
        runtime: `"xnnpack"` or `"builtin"` when the failure is specific to
            one runtime, else None.
        kind: `"run"` when the model failed to load or run (e.g. a kernel
            "failed to prepare"), `"mismatch"` when it ran but its outputs
            differ from the Keras model's, else None.

    Example:

    >>> from keras_lottery.deploy.tflite.report import ExportError
    >>> ExportError("outputs differ", runtime="xnnpack").runtime
    'xnnpack'
    """

    def __init__(self, message: str, *, runtime: str | None = None,
                 kind: str | None = None):
        super().__init__(message)
        self.runtime = runtime
        self.kind = kind


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
        encoding: `"block_sparse"`, `"densify"` or `"dense"` (see
            `keras_lottery.deploy.tflite`).
        block: The sparse block shape in TFLite layout (`(1, 4)` is four
            consecutive inputs of one output unit), None when dense.
        stored_fraction: Fraction of the tensor's values actually stored.
        stored_bytes: Bytes of the stored values (indices excluded).
        xnnpack: Whether the op was delegated to XNNPACK when loaded with
            the default delegates; None when the model did not load.
        zeros: Fraction of the weight's values that are zero, read from
            the file (None when it cannot be read there).

    Example:

    >>> from keras_lottery.deploy.tflite.report import TensorEncoding
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
    zeros: float | None = None

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
        off_xnnpack: `(op index, op name, reason)` for each op XNNPACK
            did not take when the model loaded with the default delegates.
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
    off_xnnpack: tuple[tuple[int, str, str], ...] = ()
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
        data["off_xnnpack"] = [list(op) for op in self.off_xnnpack]
        data["size_ratio"] = self.size_ratio
        return data

    def to_json(self, **kwargs) -> str:
        """The report as a JSON string (`kwargs` go to `json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        header = ("Layer", "Op", "Shape", "Type", "Zeros", "Encoding",
                  "Stored", "Bytes", "XNNPACK")
        rows = [
            (t.layer, t.op, "x".join(map(str, t.shape)), t.dtype,
             "-" if t.zeros is None else f"{100 * t.zeros:.1f}%",
             t.describe(), f"{100 * t.stored_fraction:.1f}%",
             f"{t.stored_bytes:,}",
             "-" if t.xnnpack is None else ("yes" if t.xnnpack else "no"))
            for t in self.tensors
        ]
        lines = [f"TFLite model {self.path}",
                 text_table(rows, header, left=[0, 1, 2, 3, 5, 8])]
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
        lines += [f"  off XNNPACK: op #{i} {reason}"
                  for i, _, reason in self.off_xnnpack]
        lines.append("Op versions: " + ", ".join(
            f"{k} v{v}" for k, v in sorted(self.op_versions.items())))
        if self.max_error:
            lines.append("Verified: " + ", ".join(
                f"{k} max rel. error {v:.2e}"
                for k, v in self.max_error.items()
            ) + f" (tolerance {self.tolerance:g})")
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)


#: The fraction of zeros from which the converter stores a weight sparse.
CONVERTER_SPARSITY = 0.3

#: Ops whose weights `EXPERIMENTAL_SPARSITY` sparse-encodes (observed with
#: TensorFlow 2.21; a GATHER table with 80% zeros stays dense).
SPARSE_ENCODED_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")


def dense_weights_note(tensors, *, only_zeroed: bool = False) -> str | None:
    """Why weights are stored dense: none has enough zeros, or (naming
    them) the converter does not sparse-encode their op's weights.

    Example:

    >>> from keras_lottery.deploy.tflite.report import (
    ...     TensorEncoding, dense_weights_note)
    >>> table = TensorEncoding("GATHER", 0, "embedding", "t", (100, 8),
    ...                        "float32", "dense", None, 1.0, 3200, False, 0.8)
    >>> print(dense_weights_note([table]))  # doctest: +ELLIPSIS
    Stored dense although mostly zeros: embedding (GATHER table, 80% zeros...
    """
    zeroed = [t for t in tensors if t.encoding == "dense" and t.zeros
              is not None and t.zeros >= CONVERTER_SPARSITY]
    if not zeroed:
        return None if only_zeroed else (
            "No weight has >= 30% zeros, the converter's threshold for a "
            "sparse encoding: the file is the dense export.")
    names = ", ".join(
        f"{t.layer} ({t.op}{' table' if t.op == 'GATHER' else ''}, "
        f"{100 * t.zeros:.0f}% zeros, {t.stored_bytes:,} bytes)"
        for t in zeroed)
    note = (f"Stored dense although mostly zeros: {names}. TFLite's "
            "converter sparse-encodes only the weights of "
            f"{', '.join(SPARSE_ENCODED_OPS)}.")
    if any(t.op == "GATHER" for t in zeroed):
        note += (
            " An embedding table is the GATHER op's input, and LiteRT's "
            "GATHER kernel reads a dense table only. export_tflite stores "
            "a table sparse behind a DENSIFY op when GATHER reads the "
            "stored table itself (not through a DEQUANTIZE, as with "
            "quantize='float16' or 'dynamic'); this one it could not. The "
            "file compresses well (zeros gzip to almost nothing) for "
            "download size.")
    if any(t.op in SPARSE_ENCODED_OPS for t in zeroed):
        note += (" It left dense even some weights of those ops here: "
                 "check them with sparse=True and quantize=None.")
    return note


__all__ = ["ExportError", "ExportReport", "TensorEncoding",
           "dense_weights_note"]
