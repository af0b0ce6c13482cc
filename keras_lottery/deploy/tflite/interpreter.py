"""Running a `.tflite` file in LiteRT's interpreter; `inspect_tflite`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from keras_lottery.deploy.tflite.flatbuffer import Flatbuffer, read_flatbuffer
from keras_lottery.deploy.tflite.ops import off_xnnpack
from keras_lottery.deploy.tflite.paths import check_path
from keras_lottery.deploy.tflite.report import ExportReport, TensorEncoding


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter
    except ImportError as error:  # pragma: no cover - depends on install
        raise ImportError(
            "Running a .tflite file needs `ai-edge-litert`. Install it with: "
            "pip install 'keras-lottery[export]'."
        ) from error
    return interpreter


def load(content: bytes, *, xnnpack: bool, threads: int | None = None):
    module = _interpreter_module()
    resolver = (module.OpResolverType.AUTO if xnnpack else
                module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter = module.Interpreter(
        model_content=bytes(content), num_threads=threads,
        experimental_op_resolver_type=resolver,
    )
    interpreter.allocate_tensors()
    return interpreter


def delegated_ops(interpreter, num_ops: int) -> set[int]:
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


def first_line(error: BaseException) -> str:
    text = str(error).strip().replace("\n", " ")
    # LiteRT runs two messages together: "...node #1Node number 4 (...)".
    text = re.sub(r"(#\d+)(Node number)", r"\1; \2", text)
    return text if len(text) < 300 else text[:297] + "..."


class Analysis(NamedTuple):
    """What `analyse` read from a model (see `ExportReport`)."""

    tensors: tuple[TensorEncoding, ...]
    versions: dict[str, int]
    placement: str
    error: str | None
    off: tuple[tuple[int, str, str], ...]


def analyse(content: bytes, keras_weights=()) -> Analysis:
    """Encodings, op versions and XNNPACK placement of a model, with the
    reason each op XNNPACK did not take runs off it."""
    raw, versions, num_ops = read_flatbuffer(content, keras_weights)
    xnn_error = None
    try:
        taken = delegated_ops(load(content, xnnpack=True), num_ops)
    except (RuntimeError, ValueError) as error:
        taken, xnn_error = None, first_line(error)
    tensors = tuple(
        TensorEncoding(**r, xnnpack=None if taken is None
                       else r["op_index"] in taken)
        for r in raw
    )
    off: tuple[tuple[int, str, str], ...] = ()
    if taken is None:
        placement = "load fails"
    elif len(taken) == num_ops:
        placement = "all"
    else:
        placement = "partial" if taken else "none"
        off = off_xnnpack(Flatbuffer(content), taken)
    return Analysis(tensors, versions, placement, xnn_error, off)


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
    path = check_path(path, must_exist=True)
    content = Path(path).read_bytes()
    tensors, versions, placement, xnn_error, off = analyse(content)
    return ExportReport(
        path=path, file_bytes=len(content), dense_bytes=None, quantize=None
        if not any(t.dtype == "int8" for t in tensors) else "int8 or dynamic",
        sparse=any(t.encoding != "dense" for t in tensors), tensors=tensors,
        op_versions=versions, xnnpack=placement, xnnpack_error=xnn_error,
        off_xnnpack=off,
    )


__all__ = ["inspect_tflite"]
