"""Whole-model operations: `wrap`, `strip`, `summary` and wrapper lookup."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence

import keras
import numpy as np

from keras_lottery import registry
from keras_lottery.wrapper import PrunableWrapper

try:  # Keras keeps its Functional class private; fall back gracefully.
    from keras.src.models.functional import Functional as _Functional
except ImportError:  # pragma: no cover - depends on the Keras layout
    _Functional = None

LayerSelector = str | type


def _is_graph_model(model) -> bool:
    if isinstance(model, keras.Sequential):
        return True
    return _Functional is not None and isinstance(model, _Functional)


def check_model(model, *, what: str = "model") -> keras.Model:
    """Raises a clear error unless `model` is a built Keras model."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a keras.Model for `{what}`. Received: {what}={model!r} "
            f"of type {type(model).__name__}. If this is a tf_keras (Keras 2) "
            "model, rebuild it with Keras 3 (or use keras_lottery.from_tfmot "
            "for models pruned with tfmot)."
        )
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built, so its weights do not exist "
            "yet. Start a Sequential model with keras.Input(shape=...), or "
            "call model.build(input_shape) or the model on a batch first."
        )
    return model


# ------------------------------------------------------------------ lookup
def iter_wrappers(model: keras.Model) -> Iterator[tuple[str, PrunableWrapper]]:
    """Yields `(key, wrapper)` for every `PrunableWrapper` in the model.

    The key is the wrapped layer's name, prefixed by the names of the
    nested models that contain it (`"encoder/dense"`), so keys are unique.
    """

    def visit(layer, prefix):
        for child in getattr(layer, "layers", []):
            if isinstance(child, PrunableWrapper):
                yield prefix + child.layer.name, child
            elif isinstance(child, keras.Model):
                yield from visit(child, f"{prefix}{child.name}/")

    seen = set()
    for key, wrapper in visit(model, ""):
        if id(wrapper) not in seen:  # a layer shared twice is one layer
            seen.add(id(wrapper))
            yield key, wrapper


def wrappers(model: keras.Model) -> dict[str, PrunableWrapper]:
    """Returns the model's `PrunableWrapper`s keyed as in `iter_wrappers`."""
    return dict(iter_wrappers(model))


def require_wrappers(model: keras.Model) -> dict[str, PrunableWrapper]:
    """Like `wrappers`, but a model without any is a clear error."""
    check_model(model)
    found = wrappers(model)
    if not found:
        raise ValueError(
            f"Model '{model.name}' has no PrunableWrapper layers, so there "
            "is nothing to prune. Call model = keras_lottery.wrap(model) "
            "first (then compile it)."
        )
    return found


def output_layer_keys(model: keras.Model) -> list[str]:
    """Keys of the wrappers whose outputs are outputs of the model.

    Found from the model's graph: for Sequential and functional models the
    layers that produce `model.outputs`, looking through layers without
    weights (activations, reshapes) and into nested models.
    """
    keys = {id(w): k for k, w in iter_wrappers(model)}
    found: list[str] = []

    def producers(tensor, owner):
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return
        layer = history.operation
        if isinstance(layer, PrunableWrapper):
            if id(layer) in keys and keys[id(layer)] not in found:
                found.append(keys[id(layer)])
            return
        if isinstance(layer, keras.Model) and _is_graph_model(layer):
            for out in layer.outputs:
                producers(out, layer)
            return
        if layer.weights:  # a layer with weights that is not prunable
            return
        node = layer._inbound_nodes[history.node_index]
        for inp in node.input_tensors:
            producers(inp, owner)

    if _is_graph_model(model):
        for out in model.outputs:
            producers(out, model)
    return found


# ------------------------------------------------------------- clone logic
def _clone_layer_with_weights(layer, weights=None):
    """Clones a layer from its config, built, with the given weights."""
    clone = layer.__class__.from_config(layer.get_config())
    if layer.built:
        build_config = layer.get_build_config()
        if build_config is not None:
            clone.build_from_config(build_config)
        if clone.built:
            clone.set_weights(layer.get_weights() if weights is None else weights)
    return clone


def _clone(model, transform: Callable[[keras.layers.Layer], object]):
    """Clones a Sequential/functional model, `transform` picking each layer.

    `transform(layer)` returns the new layer, or None to copy it as is.
    """
    if not _is_graph_model(model):
        raise TypeError(
            "keras_lottery works on Sequential and functional models. "
            f"Model '{model.name}' is a subclassed {type(model).__name__}, "
            "whose layer graph cannot be rebuilt. Use "
            "keras_lottery.PrunableWrapper(layer) inside the model's "
            "__init__ instead; prune, rewind, summary and the search work on "
            "such a model as they are."
        )
    def clone_function(layer):
        if isinstance(layer, keras.Model):
            if not _is_graph_model(layer):
                raise TypeError(
                    f"Nested model '{layer.name}' is a subclassed "
                    f"{type(layer).__name__}, which cannot be rebuilt. Use "
                    "PrunableWrapper inside its __init__ instead."
                )
            return _clone(layer, transform)
        result = transform(layer)
        if result is None:
            return _clone_layer_with_weights(layer)
        return result

    clone = keras.models.clone_model(model, clone_function=clone_function)
    if not clone.built and model.built:
        clone.build_from_config(model.get_build_config())
    return clone


def _names_in(model) -> dict[str, keras.layers.Layer]:
    found = {}

    def visit(layer):
        for child in getattr(layer, "layers", []):
            found.setdefault(child.name, child)
            if isinstance(child, PrunableWrapper):
                found.setdefault(child.layer.name, child.layer)
            if isinstance(child, keras.Model):
                visit(child)

    visit(model)
    return found


def _check_selectors(model, selectors, argument) -> tuple[list, list]:
    if selectors is None:
        return [], []
    if isinstance(selectors, (str, type)):
        selectors = [selectors]
    names, types = [], []
    available = _names_in(model)
    for item in selectors:
        if isinstance(item, str):
            if item not in available:
                raise ValueError(
                    f"`{argument}` names a layer '{item}' that is not in "
                    f"model '{model.name}'. Layers: {sorted(available)}."
                )
            names.append(item)
        elif isinstance(item, type) and issubclass(item, keras.layers.Layer):
            types.append(item)
        else:
            raise TypeError(
                f"`{argument}` takes layer names or layer classes. "
                f"Received: {item!r} of type {type(item).__name__}."
            )
    return names, types


def _matches(layer, names, types) -> bool:
    return layer.name in names or isinstance(layer, tuple(types))


def wrap(
    model: keras.Model,
    include: Sequence[LayerSelector] | LayerSelector | None = None,
    exclude: Sequence[LayerSelector] | LayerSelector | None = None,
) -> keras.Model:
    """Returns a copy of `model` whose prunable layers are `PrunableWrapper`s.

    The copy has the same weights and the same outputs as the original,
    which stays usable and unchanged. Every layer with prunable weights
    (see `keras_lottery.prunable_weights`) is wrapped, in nested models
    too, unless `include` narrows or `exclude` removes it. A layer that is
    already wrapped is kept as it is (with its masks and rewind point).
    The wrappers capture the current weights as the rewind point theta_0,
    and the model remembers the values of its other trainable weights for
    `keras_lottery.rewind(model, to="init")`.

    Compile the returned model before training it.

    Args:
        model: A built Sequential or functional `keras.Model`.
        include: Layer names or layer classes to wrap; all prunable layers
            when None.
        exclude: Layer names or layer classes never to wrap.

    Returns:
        A new `keras.Model` of the same kind.

    Raises:
        TypeError: If `model` is not a Keras model, is subclassed, or a
            selector is neither a name nor a layer class.
        ValueError: If `model` is not built, a name or a class in `include`
            matches no layer, or a layer named in `include` has no
            prunable weights.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
    ...                           keras.layers.Dense(2)])
    >>> wrapped = kl.wrap(model, exclude=[model.layers[0].name])
    >>> [type(layer).__name__ for layer in wrapped.layers]
    ['Dense', 'PrunableWrapper']
    """
    check_model(model)
    include_names, include_types = _check_selectors(model, include, "include")
    exclude_names, exclude_types = _check_selectors(model, exclude, "exclude")
    for name in include_names:
        layer = _names_in(model)[name]
        if not registry.is_prunable_type(layer) and not isinstance(
            layer, (PrunableWrapper, keras.Model)
        ):
            raise ValueError(
                f"`include` names layer '{name}' of type "
                f"{type(layer).__name__}, which has no prunable weights. "
                "Remove it from `include`, or declare its weights with "
                "keras_lottery.register_prunable."
            )
    for cls in include_types:
        if not registry.is_prunable_class(cls) and not issubclass(
            cls, PrunableWrapper
        ):
            raise ValueError(
                f"`include` names layer class {cls.__name__}, which has no "
                "prunable weights. Remove it from `include`, or declare its "
                "weights with keras_lottery.register_prunable. "
                f"Received: include={include!r}"
            )
        layers = _names_in(model).values()
        if not any(isinstance(layer, cls) for layer in layers):
            present = sorted({type(layer).__name__ for layer in layers})
            raise ValueError(
                f"`include` names layer class {cls.__name__}, but model "
                f"'{model.name}' has no layer of that class, so nothing would "
                f"be wrapped. Layer classes in the model: {present}."
            )
    selective = bool(include_names or include_types)

    def transform(layer):
        if isinstance(layer, PrunableWrapper):
            return None  # copied with its masks and rewind point
        if not registry.is_prunable_type(layer):
            return None
        if not registry.prunable_weights(layer) and layer.built:
            return None
        if selective and not _matches(layer, include_names, include_types):
            return None
        if _matches(layer, exclude_names, exclude_types):
            return None
        return PrunableWrapper(_clone_layer_with_weights(layer))

    wrapped = _clone(model, transform)
    from keras_lottery.rewind import capture_init  # rewind imports this module

    capture_init(wrapped, wrappers_too=False)
    return wrapped


def strip(model: keras.Model) -> keras.Model:
    """Returns a plain Keras model with every wrapper removed.

    Each `PrunableWrapper` is replaced by a copy of the layer it wraps,
    with `w * mask` baked into every prunable weight (pruned weights are
    exactly 0.0). Other layers are copied with their weights. The result
    has the original layer types and the same predictions as `model`; it
    saves and exports without keras_lottery installed.

    Args:
        model: A built Sequential or functional model, wrapped or not.

    Returns:
        A new `keras.Model` without `PrunableWrapper` layers.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> model.layers[0].set_mask("kernel", np.zeros((3, 2)))
    >>> plain = kl.strip(model)
    >>> kernel = keras.ops.convert_to_numpy(plain.layers[0].kernel)
    >>> type(plain.layers[0]).__name__, float(np.abs(kernel).sum())
    ('Dense', 0.0)
    """
    check_model(model)

    def transform(layer):
        if not isinstance(layer, PrunableWrapper):
            return None
        inner = layer.layer
        effective = {
            id(v): layer.effective_weight(name)
            for name, v in layer._weights.items()
        }
        weights = [
            effective.get(id(v), w)
            for v, w in zip(inner.weights, inner.get_weights())
        ]
        return _clone_layer_with_weights(inner, weights)

    return _clone(model, transform)


# ----------------------------------------------------------------- summary
@dataclasses.dataclass(frozen=True)
class WeightSummary:
    """Counts for one prunable weight."""

    layer: str
    weight: str
    shape: tuple[int, ...]
    total: int
    remaining: int

    @property
    def sparsity(self) -> float:
        """Fraction of the weight's entries that are pruned (zero)."""
        return 1.0 - self.remaining / self.total if self.total else 0.0


@dataclasses.dataclass(frozen=True)
class PruningSummary:
    """Per-weight counts of a wrapped model, printable as a table."""

    weights: tuple[WeightSummary, ...]

    @property
    def total(self) -> int:
        """Number of prunable weights in the model."""
        return sum(w.total for w in self.weights)

    @property
    def remaining(self) -> int:
        """Number of prunable weights not pruned."""
        return sum(w.remaining for w in self.weights)

    @property
    def sparsity(self) -> float:
        """Fraction of all prunable weights that are pruned."""
        return 1.0 - self.remaining / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        """The summary as plain Python data (JSON-able)."""
        return {
            "weights": [
                {**dataclasses.asdict(w), "sparsity": w.sparsity}
                for w in self.weights
            ],
            "total": self.total,
            "remaining": self.remaining,
            "sparsity": self.sparsity,
        }

    def __str__(self) -> str:
        rows = [
            (f"{w.layer}/{w.weight}", str(w.shape), f"{w.total:,}",
             f"{w.remaining:,}", f"{100 * w.sparsity:.2f}%")
            for w in self.weights
        ]
        rows.append(("Total", "", f"{self.total:,}", f"{self.remaining:,}",
                     f"{100 * self.sparsity:.2f}%"))
        header = ("Weight", "Shape", "Total", "Remaining", "Sparsity")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]

        def fmt(row):
            return "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths))
            )

        rule = "-" * len(fmt(header))
        lines = [fmt(header), rule, *map(fmt, rows[:-1]), rule, fmt(rows[-1])]
        return "\n".join(lines)


def summary(
    model: keras.Model, print_fn: Callable[[str], object] | None = print
) -> PruningSummary:
    """Prints and returns the prunable weights of a model and their sparsity.

    Args:
        model: A model holding `PrunableWrapper` layers.
        print_fn: Called with the table as one string; None prints nothing.

    Returns:
        A `PruningSummary`: per weight its shape, total count, remaining
        count and sparsity, plus totals (`.total`, `.remaining`,
        `.sparsity`) and `.to_dict()`.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> kl.summary(model, print_fn=None).total
    6
    """
    rows = []
    for key, wrapper in require_wrappers(model).items():
        for name in wrapper.weight_names:
            mask = wrapper.get_mask(name)
            rows.append(
                WeightSummary(
                    layer=key,
                    weight=name,
                    shape=tuple(int(d) for d in mask.shape),
                    total=int(mask.size),
                    remaining=int(np.count_nonzero(mask)),
                )
            )
    result = PruningSummary(tuple(rows))
    if print_fn is not None:
        print_fn(str(result))
    return result


def iter_weight_keys(
    found: dict[str, PrunableWrapper],
) -> Iterable[tuple[str, PrunableWrapper, str]]:
    """Yields `("layer/weight", wrapper, weight)` for every prunable weight."""
    for key, wrapper in found.items():
        for name in wrapper.weight_names:
            yield f"{key}/{name}", wrapper, name
