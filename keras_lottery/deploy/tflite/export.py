"""`export_tflite`: strip, convert sparse and dense, choose, verify, write.

The steps, in order: check the arguments (`_check_arguments`), convert the
model once dense and once sparse (`convert`), keep the sparse file only
when it is smaller and loads under XNNPACK (`_choose_encoding`), verify
its outputs, falling back to the dense file when the sparse one fails or
is wrong under XNNPACK (`_verify_or_fall_back`), read the chosen file back
(`_final_check`: weights left dense, ops off XNNPACK) and write it
atomically.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from keras_lottery._internal.io import atomic_write_bytes, probe_writable
from keras_lottery.deploy.tflite.convert import convert
from keras_lottery.deploy.tflite.flatbuffer import keras_weight_shapes
from keras_lottery.deploy.tflite.inputs import (
    MAX_REPRESENTATIVE,
    VERIFY_SAMPLES,
    normalize_data,
    prepare_model,
    sample_inputs,
)
from keras_lottery.deploy.tflite.interpreter import Analysis, analyse
from keras_lottery.deploy.tflite.paths import check_path
from keras_lottery.deploy.tflite.report import (
    ExportError,
    ExportReport,
    dense_weights_note,
)
from keras_lottery.deploy.tflite.tables import sparse_encode_tables
from keras_lottery.deploy.tflite.verify import verify as verify_outputs

QUANTIZE_MODES = (None, "dynamic", "int8", "float16")


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
    - the sparse file fails to load or run under XNNPACK, the default
      delegate (int8 or dynamic-range weights whose zeros are not in 1x16
      blocks get DENSIFY ops that XNNPACK "failed to prepare"), or gives
      wrong outputs there.

    The notes also name weights with >= 30% zeros that the converter
    stored dense (an Embedding's table: a GATHER input, which it never
    sparse-encodes), and `report.off_xnnpack` names each op XNNPACK did
    not take, and why. Keras' Flatten and Reshape are converted with a
    constant shape (`reshapes.ConstantReshape`), so that a MobileNet-like
    net ending in Flatten and Dense runs wholly on XNNPACK.

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
            the Keras model's (see
            `keras_lottery.deploy.tflite.verify.TOLERANCES`).
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
    path = check_path(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"export_tflite: {path} is a folder. Received: path={path!r}. "
            "Give a file name ending in .tflite.")
    probe_writable(os.path.dirname(os.path.abspath(path)),
                   f"export_tflite(path={path!r})", create=False)
    _check_arguments(sparse, quantize, representative_data, verify,
                     select_tf_ops)
    model = prepare_model(model)
    representative = None
    if representative_data is not None:
        representative = normalize_data(representative_data, model,
                                        "representative_data")
        representative = [a[:MAX_REPRESENTATIVE] for a in representative]
    variants = {"dense": False, **({"sparse": True} if sparse else {})}
    converted = convert(model, variants=variants, quantize=quantize,
                        representative=representative,
                        select_tf_ops=select_tf_ops)
    dense = converted["dense"]
    shapes = keras_weight_shapes(model)
    notes: list[str] = []
    content, used_sparse = dense, False
    tables: list[str] = []
    if sparse:
        candidate, tables = sparse_encode_tables(converted["sparse"])
        content, used_sparse = _choose_encoding(
            candidate, dense, shapes, quantize, notes)
    errors, tolerance = {}, None
    if verify:
        inputs = ([a[:VERIFY_SAMPLES] for a in representative]
                  if representative is not None else sample_inputs(model))
        content, used_sparse, errors, tolerance = _verify_or_fall_back(
            content, dense, used_sparse, model, inputs, quantize, notes)
    elif used_sparse and quantize == "dynamic":
        notes.append(
            "Not verified: block-sparse dynamic-range weights have given "
            "wrong outputs under XNNPACK (measured on LiteRT 2.3); export "
            "with verify=True to check this model."
        )
    if used_sparse and tables:
        notes.append(
            "Embedding tables stored sparse behind a DENSIFY op (the "
            "converter leaves a GATHER table dense; export_tflite rewrites "
            "it): a smaller file; LiteRT expands the table when the model "
            "loads, so the same memory and speed.")
    found = _final_check(content, shapes, quantize, sparse, used_sparse,
                         notes)
    atomic_write_bytes(path, content)
    return ExportReport(
        path=path, file_bytes=len(content), dense_bytes=len(dense),
        quantize=quantize, sparse=used_sparse, tensors=found.tensors,
        op_versions=found.versions, xnnpack=found.placement,
        xnnpack_error=found.error, off_xnnpack=found.off,
        max_error=errors, tolerance=tolerance,
        backend=keras.backend.backend(), notes=tuple(notes),
    )


def _check_arguments(sparse, quantize, representative_data, verify,
                     select_tf_ops) -> None:
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
    if select_tf_ops and verify:
        raise ValueError(
            "select_tf_ops=True embeds TensorFlow (Flex) ops, which "
            "ai_edge_litert's interpreter cannot run, so the file cannot be "
            "verified. Pass verify=False together with select_tf_ops=True."
        )


def _xnnpack_failure_note(quantize, cause: str) -> str:
    """The sparse encoding failed to load or run under XNNPACK: why, and
    what to do (the same words whether loading or running failed)."""
    note = ("The sparse encoding fails under XNNPACK, LiteRT's default "
            f"delegate: {cause}. ")
    if quantize in ("int8", "dynamic"):
        note += (f"For {quantize} weights XNNPACK cannot prepare the "
                 "DENSIFY ops the converter emits for zeros not in 1x16 "
                 "blocks along the input axis. ")
    note += "Wrote the dense encoding instead. To keep the sparse one, "
    if quantize in ("int8", "dynamic"):
        return note + (
            "prune Dense kernels in 1x16 blocks (kernel[i:i+16, j]: "
            "prune(..., granularity='block', block_shape=(16, 1))), or "
            "use quantize=None or 'float16'.")
    return note + ("export with verify=False and check the file on your "
                   "runtime, or report the error to LiteRT.")


def _not_smaller_note(candidate: bytes, dense: bytes, tensors,
                      quantize) -> str:
    stored = [t for t in tensors if t.encoding != "dense"]
    kept = sum(t.stored_fraction for t in stored) / max(1, len(stored))
    block = "1x16" if quantize in ("int8", "dynamic") else "1x4"
    kind = quantize or "float32"
    return (
        f"The sparse encoding ({len(candidate):,} bytes) is not smaller "
        f"than the dense one ({len(dense):,} bytes): its sparse weights "
        f"keep {100 * kept:.0f}% of their values on average, and the "
        f"indices of the kept {kind} values cost more than the zeros "
        "save. Wrote the dense encoding. To make it smaller, prune "
        f"further or in {block} blocks along the input axis "
        f"(prune(..., granularity='block'))."
    )


def _choose_encoding(candidate: bytes, dense: bytes, shapes, quantize,
                     notes: list[str]) -> tuple[bytes, bool]:
    """(content, sparse): the sparse file unless it is no smaller, has no
    sparse weight or fails to load under XNNPACK (then a note says why)."""
    tensors, _, placement, xnn_error, _ = analyse(candidate, shapes)
    if not any(t.encoding != "dense" for t in tensors):
        notes.append(dense_weights_note(tensors))
    elif placement == "load fails":
        notes.append(_xnnpack_failure_note(quantize, xnn_error))
    elif len(candidate) >= len(dense):
        notes.append(_not_smaller_note(candidate, dense, tensors, quantize))
    else:
        return candidate, True
    return dense, False


def _verify_or_fall_back(content: bytes, dense: bytes, used_sparse: bool,
                         model, inputs: list[np.ndarray], quantize,
                         notes: list[str]):
    """(content, sparse, errors, tolerance) after checking the outputs; a
    sparse file that fails or is wrong under XNNPACK gives way to the
    dense one."""
    try:
        errors, tolerance = verify_outputs(content, model, inputs, quantize,
                                           xnnpack_loads=True)
        return content, used_sparse, errors, tolerance
    except ExportError as error:
        if not used_sparse or error.runtime != "xnnpack":
            raise
        if error.kind == "run":
            notes.append(_xnnpack_failure_note(quantize, str(error)))
        else:
            notes.append(
                "The sparse encoding gives wrong outputs under XNNPACK, "
                f"LiteRT's default delegate ({error}); the dense encoding "
                "of the same weights is checked next. Wrote the dense "
                "encoding instead." + (
                    " Block-sparse dynamic-range weights are the known "
                    "case (LiteRT 2.3): use quantize='int8' in 1x16 blocks "
                    "or float32 in 1x4 blocks." if quantize == "dynamic"
                    else ""))
    errors, tolerance = verify_outputs(dense, model, inputs, quantize,
                                       xnnpack_loads=True)
    return dense, False, errors, tolerance


def _final_check(content: bytes, shapes, quantize, sparse, used_sparse,
                 notes: list[str]) -> Analysis:
    """Reads the chosen file back; it must load under XNNPACK. Notes the
    weights with many zeros stored dense, and the ops off XNNPACK."""
    found = analyse(content, shapes)
    tensors, placement, xnn_error = found.tensors, found.placement, found.error
    if used_sparse and dense_weights_note(tensors, only_zeroed=True):
        notes.append(dense_weights_note(tensors, only_zeroed=True))
    if placement == "load fails":
        raise ExportError(
            f"The converted model fails to load under XNNPACK, LiteRT's "
            f"default delegate: {xnn_error}. Received: quantize={quantize!r}, "
            f"sparse={sparse!r}."
        )
    fully_connected = [t for t in tensors if t.op == "FULLY_CONNECTED"]
    if len({t.encoding == "block_sparse" for t in fully_connected}) == 2:
        notes.append(
            "Some FullyConnected weights are block-sparse and others not: "
            "see the XNNPACK column. Block-prune all Dense layers or none "
            "to keep every FullyConnected on one fast path."
        )
    if found.off:
        notes.append(
            f"{len(found.off)} ops run off XNNPACK, on LiteRT's builtin "
            "kernels (" + ", ".join(f"#{i} {op}" for i, op, _ in found.off)
            + "); report.off_xnnpack says why for each.")
    return found


__all__ = ["QUANTIZE_MODES", "export_tflite"]
