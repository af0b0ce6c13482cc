"""Sparse-encoding embedding tables, which the TFLite converter leaves dense.

`EXPERIMENTAL_SPARSITY` sparse-encodes the weights of FULLY_CONNECTED and
convolution ops only. An Embedding's table is the input of a GATHER op,
and LiteRT's GATHER kernel reads a dense table, so the converter stores an
80%-zero table in full. `sparse_encode_tables` rewrites the flatbuffer the
way the converter does for a FULLY_CONNECTED weight with unstructured
zeros: the table is stored in TFLite's sparse format (rows dense, columns
CSR) and a DENSIFY op expands it when the model loads, feeding GATHER. A
smaller file; the same memory and speed at run time. `export_tflite`
verifies the rewritten file like any other.
"""

from __future__ import annotations

import numpy as np

from keras_lottery.deploy.tflite.flatbuffer import TENSOR_TYPES, _schema
from keras_lottery.deploy.tflite.report import CONVERTER_SPARSITY

_TABLE_TYPES = ("float32", "float16", "int8")


def _index_vector(schema, values: list[int]):
    """The narrowest of TFLite's index vectors that holds `values`."""
    top = max(values, default=0)
    for limit, name, kind in ((1 << 8, "Uint8Vector", "Uint8Vector"),
                              (1 << 16, "Uint16Vector", "Uint16Vector"),
                              (1 << 31, "Int32Vector", "Int32Vector")):
        if top < limit:
            vector = getattr(schema, f"{name}T")()
            vector.values = values
            return getattr(schema.SparseIndexVector, kind), vector
    raise ValueError(f"A sparse index {top} does not fit in int32.")


def _sparsity(schema, table: np.ndarray):
    """Sparsity parameters and kept values of a 2D table (CSR rows)."""
    rows = table.reshape(table.shape[0], -1)
    segments, indices = [0], []
    for row in rows:
        kept = np.flatnonzero(row)
        indices += kept.tolist()
        segments.append(len(indices))
    dense = schema.DimensionMetadataT()
    dense.format, dense.denseSize = schema.DimensionType.DENSE, rows.shape[0]
    csr = schema.DimensionMetadataT()
    csr.format, csr.denseSize = schema.DimensionType.SPARSE_CSR, rows.shape[1]
    csr.arraySegmentsType, csr.arraySegments = _index_vector(schema, segments)
    csr.arrayIndicesType, csr.arrayIndices = _index_vector(schema, indices)
    params = schema.SparsityParametersT()
    params.traversalOrder, params.dimMetadata = [0, 1], [dense, csr]
    return params, rows[rows != 0]


def _densify_code(model, schema) -> int:
    densify = schema.BuiltinOperator.DENSIFY
    for i, code in enumerate(model.operatorCodes):
        if max(int(code.builtinCode), int(code.deprecatedBuiltinCode)) == densify:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.version = densify, 1
    code.deprecatedBuiltinCode = min(127, densify)
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def sparse_encode_tables(content: bytes) -> tuple[bytes, list[str]]:
    """Stores each 2D GATHER table with >= 30% zeros sparse behind DENSIFY.

    Args:
        content: A `.tflite` flatbuffer.

    Returns:
        `(content, names)`: the rewritten file and the tables' tensor names
        (the input unchanged, and no names, when no table qualifies).

    Example:

    >>> from keras_lottery.deploy.tflite.tables import sparse_encode_tables
    >>> sparse_encode_tables(open("m.tflite", "rb").read())  # doctest: +SKIP
    """
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    if any(getattr(b, "offset", 0) > 1 for b in model.buffers or []):
        return content, []  # weights outside the flatbuffer: leave as is
    graph = model.subgraphs[0]
    gather = schema.BuiltinOperator.GATHER
    done: list[str] = []
    densified: dict[int, int] = {}  # table tensor -> its DENSIFY output
    for op in list(graph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        if max(int(code.builtinCode), int(code.deprecatedBuiltinCode)) != gather:
            continue
        t = int(op.inputs[0])
        if t in densified:  # a table shared by several GATHER ops
            op.inputs = [densified[t], *[int(i) for i in op.inputs[1:]]]
            continue
        tensor = graph.tensors[t]
        dtype = TENSOR_TYPES.get(int(tensor.type))
        buffer = model.buffers[tensor.buffer] if tensor.buffer else None
        if (dtype not in _TABLE_TYPES or tensor.sparsity is not None
                or buffer is None or buffer.data is None
                or len(tensor.shape) != 2):
            continue
        table = np.frombuffer(bytes(bytearray(buffer.data)), dtype=dtype)
        if table.size != int(np.prod(tensor.shape)) or np.mean(
                table == 0) < CONVERTER_SPARSITY:
            continue
        params, kept = _sparsity(schema, table.reshape(tuple(tensor.shape)))
        buffer.data = np.ascontiguousarray(kept).view(np.uint8)
        tensor.sparsity = params
        dense = schema.TensorT()
        dense.shape, dense.type = list(tensor.shape), tensor.type
        dense.name = tensor.name + b";densified"
        model.buffers.append(schema.BufferT())
        dense.buffer = len(model.buffers) - 1
        graph.tensors.append(dense)
        unpack = schema.OperatorT()
        unpack.opcodeIndex = _densify_code(model, schema)
        unpack.inputs, unpack.outputs = [t], [len(graph.tensors) - 1]
        unpack.builtinOptionsType = schema.BuiltinOptions.DensifyOptions
        unpack.builtinOptions = schema.DensifyOptionsT()
        graph.operators.insert(0, unpack)
        densified[t] = len(graph.tensors) - 1
        op.inputs = [densified[t], *[int(i) for i in op.inputs[1:]]]
        done.append(tensor.name.decode(errors="replace"))
    if not done:
        return content, []
    builder = flatbuffers.Builder(len(content))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), done


__all__ = ["sparse_encode_tables"]
