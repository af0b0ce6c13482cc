"""The one model walker and the one graph walker.

The only module (with `masking`) that reads Keras internals: private
classes (`keras.src`), `_flatten_layers`, a tensor's `_keras_history` and a
layer's `_inbound_nodes`. Everything else in keras_lottery walks models
and graphs through these functions, so a change in Keras' internals is
fixed here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import keras

try:  # Keras keeps its Functional class private; fall back gracefully.
    from keras.src.models.functional import Functional
except ImportError:  # pragma: no cover - depends on the Keras layout
    Functional = None


def is_graph_model(model) -> bool:
    """A Sequential or functional model (its graph of layers can be read)."""
    if isinstance(model, keras.Sequential):
        return True
    return Functional is not None and isinstance(model, Functional)


def is_plain_graph_model(model) -> bool:
    """Exactly a Sequential or functional model, not a subclass of one."""
    return type(model) is keras.Sequential or (
        Functional is not None and type(model) is Functional
    )


# ------------------------------------------------------------ model walker
def children(layer) -> list:
    """The layers tracked directly by `layer` (sub-layers, nested models)."""
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:  # an operation node, not a layer
        return []
    return list(flatten(include_self=False, recursive=False))


def all_layers(layer) -> list:
    """Every layer inside `layer`, at any depth (not `layer` itself)."""
    flatten = getattr(layer, "_flatten_layers", None)
    return [] if flatten is None else list(flatten(include_self=False))


def walk(
    root: keras.layers.Layer,
    unwrap: Callable[[keras.layers.Layer], keras.layers.Layer | None],
) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields `(key, layer)` for every layer inside `root`, depth first.

    Sees the layers of Sequential, functional and subclassed models, nested
    models, and the sub-layers of composite layers. The key is the layer's
    name prefixed by the names of the layers containing it
    (`"encoder/dense"`). A layer for which `unwrap(layer)` returns an inner
    layer (a wrapper) is yielded under the inner layer's name and not
    entered; a layer shared by several parents is yielded once.
    """
    seen: set[int] = set()

    def visit(layer, prefix):
        for child in children(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            inner = unwrap(child)
            if inner is not None:
                seen.add(id(inner))
                yield prefix + inner.name, child
                continue
            yield prefix + child.name, child
            yield from visit(child, f"{prefix}{child.name}/")

    yield from visit(root, "")


# ------------------------------------------------------------ graph walker
def producer(tensor):
    """`(operation, node)` that produced a symbolic tensor, or None.

    `node.input_tensors`, `node.output_tensors` and `node.arguments` (with
    `fill_in(values)`) describe the call that made the tensor.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    operation = history.operation
    return operation, operation._inbound_nodes[history.node_index]


def operation_of(tensor):
    """The layer or operation that produced a symbolic tensor."""
    return tensor._keras_history.operation



def pack_inputs(model, arrays: list):
    """One array per `model.inputs`, in the structure `model` is called
    with: the single array, a list, or a dict keyed as the model's inputs
    (KerasHub text models take `{"token_ids": ..., "padding_mask": ...}`).
    """
    struct = getattr(model, "_inputs_struct", None)
    if struct is None or (len(arrays) == 1 and not isinstance(struct, dict)):
        return arrays[0] if len(arrays) == 1 else list(arrays)
    return keras.tree.pack_sequence_as(struct, list(arrays))
