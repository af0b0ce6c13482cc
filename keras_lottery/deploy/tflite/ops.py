"""Reading ops of a `.tflite` file: which layer a weight came from, and why
an op runs off XNNPACK.

TFLite keeps no layer names. A stored tensor's name is the TensorFlow op
(or ops, joined by `;` when the converter fused them) that produced it:
`sequential/re_lu_2/Relu;sequential/batch_normalization_2/FusedBatchNormV3;
sequential/conv2d_1/Conv2D` is conv2d_1's kernel with the batch norm and
ReLU after it folded in. The first name is often a neighbouring layer, so
`layer_of_tensor` takes the scope of the op that reads a weight (`Conv2D`,
`MatMul`, `depthwise`, ...), and says `"?"` (unknown) rather than guess.
"""

from __future__ import annotations

import re

#: Label of a weight whose layer cannot be told from its tensor name.
UNKNOWN_LAYER = "?"

# TensorFlow ops that read a layer's weight; the scope before them is the
# layer (Keras 3 and tf_keras names, fused names included).
_WEIGHT_OPS = frozenset({
    "convolution", "Conv2D", "Conv3D", "Conv1D", "conv1d", "depthwise",
    "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Tensordot",
    "einsum", "Einsum", "embedding_lookup", "GatherV2", "Gather", "take",
    "ReadVariableOp", "Conv2DBackpropInput", "conv_transpose", "kernel",
    "embeddings", "BiasAdd",
})


def layer_of_tensor(name: str) -> str:
    """The layer scope of a stored weight, from its tensor name, or `"?"`.

    Example:

    >>> from keras_lottery.deploy.tflite.ops import layer_of_tensor
    >>> layer_of_tensor("sequential/re_lu_2/Relu;sequential/"
    ...                 "batch_normalization_2/FusedBatchNormV3;"
    ...                 "sequential/conv2d_1/Conv2D1")
    'sequential/conv2d_1'
    >>> layer_of_tensor("arith.constant3")
    '?'
    """
    scopes = []
    for part in name.split(";"):
        if "/" not in part:
            continue
        scope, op = part.rsplit("/", 1)
        if op in _WEIGHT_OPS or re.sub(r"\d+$", "", op) in _WEIGHT_OPS:
            # `dense/MatMul/ReadVariableOp`: the layer is above the op.
            parent, _, last = scope.rpartition("/")
            if last in _WEIGHT_OPS and parent:
                scope = parent
            if scope not in scopes:
                scopes.append(scope)
    return scopes[0] if len(scopes) == 1 else UNKNOWN_LAYER


# ----------------------------------------------------------- off XNNPACK
#: Ops TFLite's XNNPACK delegate has a kernel for (float32; LiteRT 2.x).
XNNPACK_OPS = frozenset({
    "ABS", "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CEIL", "CONCATENATION",
    "CONV_2D", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DENSIFY",
    "DIV", "ELU", "FULLY_CONNECTED", "FLOOR", "GELU", "HARD_SWISH",
    "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM",
    "MUL", "NEG", "PAD", "PRELU", "QUANTIZE", "RELU", "RELU6",
    "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "ROUND", "RSQRT", "SLICE",
    "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQRT", "SQUARE",
    "SQUARED_DIFFERENCE", "STRIDED_SLICE", "SUB", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV",
})

_SHAPE_HINT = ("a shape computed at run time, as a layer reading the size "
               "of the batch axis makes it; export_tflite already gives "
               "Keras' Flatten and Reshape a constant shape")


def _dtype(fb, t: int) -> str:
    from keras_lottery.deploy.tflite.flatbuffer import TENSOR_TYPES

    return TENSOR_TYPES.get(int(fb.graph.tensors[t].type), "?")


def _reason(fb, op) -> str:
    """Why XNNPACK's delegate left one op to the builtin kernels."""
    name = fb.op_name(op)
    inputs = [int(t) for t in (op.inputs if op.inputs is not None else [])
              if int(t) >= 0]
    outputs = [int(t) for t in (op.outputs if op.outputs is not None else [])]
    out_type = _dtype(fb, outputs[0]) if outputs else "?"
    in_types = {_dtype(fb, t) for t in inputs}
    if name == "SHAPE":
        return f"SHAPE: {_SHAPE_HINT}; XNNPACK has no SHAPE op"
    if name == "RESHAPE" and len(inputs) > 1 and not fb.stored_bytes(inputs[1]):
        return ("RESHAPE to a shape computed at run time: XNNPACK takes "
                f"RESHAPE only with a constant shape ({_SHAPE_HINT})")
    if name != "GATHER" and (out_type in ("int32", "int64", "bool")
                             or in_types & {"int32", "int64"}):
        return (f"{name} on integers (index or shape arithmetic, e.g. an "
                "Embedding wrapping negative indices, or a batch size read "
                "at run time): XNNPACK computes only float and quantized "
                "tensors")
    if name == "GATHER":
        return ("GATHER (an embedding lookup): XNNPACK has no GATHER; it "
                "runs on LiteRT's builtin kernel")
    if name == "FULLY_CONNECTED" and len(inputs) > 1:
        weight = fb.graph.tensors[inputs[1]]
        if weight.sparsity is not None:
            return ("FULLY_CONNECTED with block-sparse weights: runs on "
                    "TFLite's builtin sparse kernel, which XNNPACK does not "
                    "replace")
    if name in ("DENSIFY", "DEQUANTIZE"):
        return (f"{name}: unpacks a stored weight for an op that runs off "
                "XNNPACK (once, when the model loads)")
    if name not in XNNPACK_OPS:
        return f"{name}: XNNPACK has no such op"
    types = sorted({_dtype(fb, t) for t in inputs + outputs} - {"int32"})
    return (f"{name} on {', '.join(types)} tensors: XNNPACK's delegate "
            "declined this instance (its types, parameters or a "
            "non-constant weight)")


def off_xnnpack(fb, taken: set[int]) -> tuple[tuple[int, str, str], ...]:
    """`(op index, op name, reason)` for each op XNNPACK did not take."""
    found = []
    for index, op in enumerate(fb.operators):
        if index in taken:
            continue
        found.append((index, fb.op_name(op), _reason(fb, op)))
    return tuple(found)


__all__ = ["UNKNOWN_LAYER", "XNNPACK_OPS", "layer_of_tensor", "off_xnnpack"]
