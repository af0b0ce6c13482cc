"""Whole-model operations: `wrap`, `strip`, `summary` and wrapper lookup."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import keras
import numpy as np

from keras_lottery._internal import graph
from keras_lottery._internal import masking as _masking
from keras_lottery.core import registry
from keras_lottery.core.wrapper import PrunableWrapper, _copy, attached_wrapper

LayerSelector = str | type


def _is_rebuildable(model) -> bool:
    """Whether `keras.models.clone_model` can rebuild this model's graph.

    True for plain Sequential and functional models whose nested models are
    plain too; False for subclassed models and functional subclasses with a
    constructor of their own (every KerasHub model).
    """
    if not graph.is_plain_graph_model(model):
        return False
    return all(
        _is_rebuildable(layer)
        for _, layer in walk(model)
        if isinstance(layer, keras.Model)
    )


def check_model(model, *, what: str = "model") -> keras.Model:
    """Raises a clear error unless `model` is a built Keras model."""
    if type(model).__name__ == "RoundRecord":
        raise TypeError(
            f"Expected a keras.Model for `{what}`, but received a RoundRecord "
            "(one round of a search: its numbers, not its model). Get the "
            "model with result.ticket(record, trained=True), e.g. "
            "result.ticket(result.best_ticket(), trained=True)."
        )
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


# ------------------------------------------------------------ the walker
def _unwrap(layer):
    return layer.layer if isinstance(layer, PrunableWrapper) else None


def walk(
    model: keras.layers.Layer,
) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields `(key, layer)` for every layer inside `model`, depth first.

    The key is the layer's name, prefixed by the names of the layers that
    contain it (`"encoder/dense"`). A `PrunableWrapper` is yielded under its
    wrapped layer's name and not entered (see `graph.walk`).
    """
    return graph.walk(model, _unwrap)


# ------------------------------------------------------------------ lookup
def iter_wrappers(model: keras.Model) -> Iterator[tuple[str, PrunableWrapper]]:
    """Yields `(key, wrapper)` for every `PrunableWrapper` in the model.

    Wrappers in the layer graph and wrappers attached in place alike. The
    key is the wrapped layer's name, prefixed by the names of the nested
    models and composite layers that contain it (`"encoder/dense"`).
    """
    for key, layer in walk(model):
        if isinstance(layer, PrunableWrapper):
            yield key, layer
        else:
            attached = attached_wrapper(layer)
            if attached is not None:
                yield key, attached


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

    Found from the model's graph where it has one (Sequential, functional,
    KerasHub models): the layers that produce `model.outputs`, looking
    through layers and operations without weights (activations, reshapes,
    `x + y`) and into nested models. A subclassed model has no graph to
    read: its output layer is taken to be the wrapped layer whose weights
    it creates last, as `Dense` heads are.
    """
    keys = {id(w): k for k, w in iter_wrappers(model)}
    inner = {id(w.layer): id(w) for w in wrappers(model).values()}
    found: list[str] = []

    def producers(tensor):
        made = graph.producer(tensor)
        if made is None:
            return
        layer, node = made
        key = keys.get(inner.get(id(layer), id(layer)))
        if key is not None:
            if key not in found:
                found.append(key)
            return
        if isinstance(layer, keras.Model) and graph.is_graph_model(layer):
            for out in layer.outputs:
                producers(out)
            return
        if getattr(layer, "weights", None):  # has weights, not prunable
            return
        for inp in node.input_tensors:
            producers(inp)

    if graph.is_graph_model(model):
        for out in model.outputs:
            producers(out)
        return found
    order = {id(v): i for i, v in enumerate(model.weights)}
    last = max(
        iter_wrappers(model),
        key=lambda item: max(
            (order.get(id(v), -1) for v in item[1].layer.weights), default=-1
        ),
        default=None,
    )
    return [] if last is None else [last[0]]


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
    Operation nodes (`x + y`, `x[..., 0]`) hold no state and are reused.
    """

    def clone_function(layer):
        if not isinstance(layer, keras.layers.Layer):
            return layer  # an operation node
        if isinstance(layer, keras.Model):
            return _clone(layer, transform)
        result = transform(layer)
        if result is None:
            return _clone_layer_with_weights(layer)
        return result

    clone = keras.models.clone_model(model, clone_function=clone_function)
    if not clone.built and model.built:
        clone.build_from_config(model.get_build_config())
    return clone


def _fresh_copy(model) -> keras.Model:
    """A new model of the same class and config, with the same weights.

    For models whose graph cannot be rebuilt layer by layer: the model is
    recreated from its config (as `.keras` loading does), then given the
    weights. Wrappers attached in place are not part of the config, so the
    copy has none.
    """
    try:
        config = keras.saving.serialize_keras_object(model)
        config.pop("compile_config", None)
        # The class itself is at hand: no registration needed to copy.
        names = {config.get("registered_name"), config.get("class_name")}
        copy = keras.saving.deserialize_keras_object(
            config, custom_objects={n: type(model) for n in names if n}
        )
    except Exception as error:  # rethrown with the fix below
        raise TypeError(
            f"Could not copy model '{model.name}' ({type(model).__name__}) "
            f"from its config: {type(error).__name__}: {error}. A subclassed "
            "model needs get_config() and a registered class "
            "(@keras.saving.register_keras_serializable()) to be copied, "
            "stripped or saved."
        ) from error
    if not copy.built and model.built:
        copy.build_from_config(model.get_build_config())
    if len(copy.weights) != len(model.weights):
        raise TypeError(
            f"Model '{model.name}' ({type(model).__name__}) recreated from "
            f"its config has {len(copy.weights)} weights, not "
            f"{len(model.weights)}. If it holds PrunableWrapper layers built "
            "in its __init__, build it without them and call "
            "keras_lottery.wrap(model) instead."
        )
    copy.set_weights(model.get_weights())
    return copy


def _copy_attached(source, target) -> None:
    """Attaches to `target` the wrappers attached in place in `source`.

    Both models have the same architecture (one is a copy of the other);
    masks and rewind points are copied.
    """
    layers = dict(walk(target))
    for key, wrapper in iter_wrappers(source):
        if wrapper is not attached_wrapper(wrapper.layer):
            continue  # a wrapper in the graph: the copy has its own
        copy = PrunableWrapper.attach(layers[key], wrapper.rewind_point)
        for variable, value in zip(
            [*copy._state_variables(), *copy._host_values()],
            [*wrapper._state_variables(), *wrapper._host_values()],
        ):
            variable.assign(_copy(value))
        for variable in copy._weights.values():
            _masking.reapply(variable)


def copy_model(model: keras.Model) -> keras.Model:
    """A copy of a wrapped model: layers, weights, masks, rewind points.

    Example:

    >>> import keras, keras_lottery as kl
    >>> from keras_lottery.core.model import copy_model
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> copy_model(model).layers[0].weight_names
    ['kernel']
    """
    check_model(model)
    if _is_rebuildable(model):
        copy = _clone(model, lambda layer: None)
    else:
        copy = _fresh_copy(model)
    _copy_attached(model, copy)
    return copy


def _names_in(model) -> dict[str, keras.layers.Layer]:
    found = {}
    for key, layer in walk(model):
        found.setdefault(key, layer)
        found.setdefault(key.rsplit("/", 1)[-1], layer)
        if isinstance(layer, PrunableWrapper):
            found.setdefault(layer.name, layer)
    return {
        name: (layer.layer if isinstance(layer, PrunableWrapper) else layer)
        for name, layer in found.items()
    }


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


def _matches(layer, key, names, types) -> bool:
    return (
        layer.name in names
        or key in names
        or f"prunable_{layer.name}" in names
        or isinstance(layer, tuple(types))
    )


def _check_include(model, include, names, types) -> None:
    available = _names_in(model)
    for name in names:
        layer = available[name]
        if not registry.is_prunable_type(layer) and not _has_prunable_inside(
            layer
        ):
            raise ValueError(
                f"`include` names layer '{name}' of type "
                f"{type(layer).__name__}, which has no prunable weights. "
                "Remove it from `include`, or declare its weights with "
                "keras_lottery.register_prunable."
            )
    for cls in types:
        if not registry.is_prunable_class(cls) and not issubclass(
            cls, PrunableWrapper
        ):
            raise ValueError(
                f"`include` names layer class {cls.__name__}, which has no "
                "prunable weights. Remove it from `include`, or declare its "
                "weights with keras_lottery.register_prunable. "
                f"Received: include={include!r}"
            )
        layers = available.values()
        if not any(isinstance(layer, cls) for layer in layers):
            present = sorted({type(layer).__name__ for layer in layers})
            raise ValueError(
                f"`include` names layer class {cls.__name__}, but model "
                f"'{model.name}' has no layer of that class, so nothing would "
                f"be wrapped. Layer classes in the model: {present}."
            )


def _has_prunable_inside(layer) -> bool:
    return any(registry.is_prunable_type(child) for _, child in walk(layer))


class _Selection:
    """Which layers `wrap` wraps: prunable, included, not excluded."""

    def __init__(self, include, exclude):
        self.include_names, self.include_types = include
        self.exclude_names, self.exclude_types = exclude
        self.selective = bool(self.include_names or self.include_types)

    def excluded(self, layer, key) -> bool:
        return _matches(layer, key, self.exclude_names, self.exclude_types)

    def wants(self, layer, key, inside_included=False) -> bool:
        """Whether to wrap `layer` (a layer with prunable weights)."""
        if not registry.is_prunable_type(layer):
            return False
        if layer.built and not registry.prunable_weights(layer):
            return False
        if self.excluded(layer, key):
            return False
        if not self.selective or inside_included:
            return True
        return _matches(layer, key, self.include_names, self.include_types)


def _attach_all(model, selection: _Selection, rewind_point: str) -> None:
    """Attaches a wrapper in place to every selected layer inside `model`.

    Layers already wrapped (in the graph or attached) are left as they are;
    excluded layers and their sub-layers are left alone. A composite layer
    named in `include` has all the prunable layers inside it wrapped.
    """

    def visit(layer, prefix, included):
        for child in graph.children(layer):
            key = prefix + child.name
            if isinstance(child, PrunableWrapper) or attached_wrapper(child):
                continue
            if registry.is_prunable_type(child):
                if selection.wants(child, key, included):
                    PrunableWrapper.attach(child, rewind_point)
                continue
            if selection.excluded(child, key):
                continue
            inside = included or (
                selection.selective
                and _matches(child, key, selection.include_names, ())
            )
            visit(child, f"{key}/", inside)

    visit(model, "", False)


def coverage(model: keras.Model) -> tuple[int, int, list[str]]:
    """How much of a model's kernels and matrices its wrappers cover.

    Returns:
        `(covered, total, unreached)`: the number of entries of trainable
        weights with two or more dimensions longer than 1 (kernels,
        embedding tables, matrices; not biases, even the 2-D ones of
        attention layers, nor a ViT's class token) that a
        `PrunableWrapper` masks, the number of all such entries, and the
        paths of the weights no wrapper masks.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...     keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")]),
    ...     exclude=["b"])
    >>> covered, total, unreached = kl.coverage(model)
    >>> covered, total, [path.split("/")[0] for path in unreached]
    (12, 20, ['b'])
    """
    masked = {
        id(v) for w in wrappers(model).values() for v in w._weights.values()
    }
    covered = total = 0
    unreached = []
    for variable in model.trainable_weights:
        if sum(int(d) > 1 for d in variable.shape) < 2 or "bias" in variable.name:
            continue
        size = int(np.prod(variable.shape))
        total += size
        if id(variable) in masked:
            covered += size
        else:
            unreached.append(variable.path)
    return covered, total, unreached


def wrap(
    model: keras.Model,
    include: Sequence[LayerSelector] | LayerSelector | None = None,
    exclude: Sequence[LayerSelector] | LayerSelector | None = None,
    *,
    rewind_point: str = "device",
) -> keras.Model:
    """Makes every prunable weight of a model maskable and rewindable.

    Every layer with prunable weights (see `keras_lottery.prunable_weights`)
    gets a `PrunableWrapper`, wherever it sits: at the top level, in nested
    models, and inside composite layers (a KerasHub transformer block's
    attention and feed-forward layers), unless `include` narrows or
    `exclude` removes it. The wrappers capture the current weights as the
    rewind point theta_0, and the model remembers the values of its other
    trainable weights for `keras_lottery.rewind(model, to="init")`.

    How the model changes depends on its kind:

    - A plain Sequential or functional model (operation nodes such as
      `x + y` included) is rebuilt: the result is a new model whose
      prunable layers are `PrunableWrapper`s in the graph; the original
      stays usable and unchanged. Composite layers in it are copied and
      wrapped inside.
    - Any other model (a subclassed `keras.Model`, a KerasHub backbone or
      task model, a functional model nesting one) is changed **in place**,
      the way `Model.quantize()` does: the wrappers are attached to its
      layers, the model keeps calling them, and the same object is
      returned. Save it with `model.save(...)` and load it with
      `keras_lottery.load_model(...)`.

    Either way the masking itself is the same (pruned weights held at 0.0
    in their variables; see `PrunableWrapper`), and `prune`, `rewind`,
    `summary`, `strip`, the searches and `export_tflite` work alike.
    A kernel or matrix that no wrapper reaches (a custom layer's weight not
    declared with `register_prunable`) is named in a warning.

    Compile the returned model before training it.

    Args:
        model: A built `keras.Model` of any kind.
        include: Layer names or layer classes to wrap (a class selects its
            subclasses; a composite layer's name selects the layers inside
            it); all prunable layers when None.
        exclude: Layer names or layer classes never to wrap.
        rewind_point: Where the wrappers keep theta_0: `"device"` (a
            variable beside each weight) or `"host"` (NumPy arrays in host
            memory: on the device, the wrapped model then needs only 1 byte
            per prunable weight more than the plain one, for the mask).

    Returns:
        The wrapped model: a new one for plain Sequential and functional
        models, `model` itself otherwise.

    Raises:
        TypeError: If `model` is not a Keras model, or a selector is
            neither a name nor a layer class.
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
    selection = _Selection(
        _check_selectors(model, include, "include"),
        _check_selectors(model, exclude, "exclude"),
    )
    _check_include(model, include, selection.include_names,
                   selection.include_types)
    if _is_rebuildable(model):

        def transform(layer):
            if isinstance(layer, PrunableWrapper):
                return None  # copied with its masks and rewind point
            if not selection.wants(layer, layer.name):
                return None
            return PrunableWrapper(
                _clone_layer_with_weights(layer), rewind_point=rewind_point
            )

        wrapped = _clone(model, transform)
        _copy_attached(model, wrapped)
    else:
        wrapped = model
    _attach_all(wrapped, selection, rewind_point)
    _warn_unreached(wrapped, selection)
    from keras_lottery.core.rewind import capture_init  # rewind imports this module

    capture_init(wrapped, wrappers_too=False)
    return wrapped


def _warn_unreached(model, selection: _Selection) -> None:
    if selection.selective or selection.exclude_names or selection.exclude_types:
        return  # the user chose what to wrap
    _, _, unreached = coverage(model)
    if unreached:
        shown = ", ".join(unreached[:6]) + (" ..." if len(unreached) > 6 else "")
        warnings.warn(
            f"keras_lottery.wrap could not reach {len(unreached)} kernel or "
            f"matrix weights of model '{model.name}' ({shown}): their layers "
            "declare no prunable weights, so they will not be pruned. "
            "Declare them with keras_lottery.register_prunable(cls, "
            "['attribute']) to prune them too; keras_lottery.coverage(model) "
            "reports what is covered.",
            UserWarning,
            stacklevel=3,
        )


def strip(model: keras.Model) -> keras.Model:
    """Returns a plain Keras model with every wrapper removed.

    Pruned weights are exactly 0.0 in the result, which has the original
    layer types and the same predictions as `model`; it saves and exports
    without keras_lottery installed. `model` itself is left as it is.

    Args:
        model: A built model of any kind, wrapped or not.

    Returns:
        A new `keras.Model` without `PrunableWrapper`s.

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
    if not _is_rebuildable(model):
        return _fresh_copy(model)

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
    """Per-weight counts of a wrapped model, printable as a table.

    Attributes:
        weights: One `WeightSummary` per prunable weight.
        kernels_and_matrices: Entries of all the model's trainable weights
            with two or more dimensions longer than 1 (biases excluded):
            what `coverage` compares the prunable weights with.
        state_bytes: Bytes of keras-lottery state on the device: the masks
            (1 byte per prunable weight) and the rewind points kept in
            variables (none with `rewind_point="host"`).
    """

    weights: tuple[WeightSummary, ...]
    kernels_and_matrices: int = 0
    state_bytes: int = 0

    @property
    def coverage(self) -> float:
        """Fraction of the kernels and matrices that are prunable."""
        if not self.kernels_and_matrices:
            return 1.0
        return self.total / self.kernels_and_matrices

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
            "kernels_and_matrices": self.kernels_and_matrices,
            "coverage": self.coverage,
            "state_bytes": self.state_bytes,
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
        if self.kernels_and_matrices:
            lines.append(
                f"Coverage: {self.total:,} of {self.kernels_and_matrices:,} "
                f"kernel and matrix weights prunable ({100 * self.coverage:.1f}%)"
                f"; keras-lottery state on the device: {self.state_bytes:,} "
                f"bytes ({self.state_bytes / max(self.total, 1):.1f} per "
                "prunable weight)."
            )
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
    _, kernels, _ = coverage(model)
    state = sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
        for w in wrappers(model).values() for v in w._state_variables()
    )
    result = PruningSummary(tuple(rows), kernels, state)
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


# -------------------------------------------------------------- loading
def load_model(
    filepath, custom_objects: dict | None = None, compile: bool = True,
    safe_mode: bool = True,
) -> keras.Model:
    """Loads a `.keras` file saved from a wrapped model of any kind.

    `keras.saving.load_model` loads wrapped Sequential and functional
    models by itself (their `PrunableWrapper`s are in the saved config).
    Models wrapped in place (subclassed, KerasHub, layers inside composite
    layers) save their masks and rewind points with the layers' weights
    but not in the config, so `keras.saving.load_model` refuses them
    ("Layer 'x' expected 2 variables, but received 4"); this function
    recreates the model, wraps the layers the file holds masks for, and
    loads everything. It loads plain `.keras` files too.

    Args:
        filepath: Path of a `.keras` file.
        custom_objects: As for `keras.saving.load_model`.
        compile: Whether to compile the model as it was saved.
        safe_mode: As for `keras.saving.load_model`.

    Returns:
        The model, with the masks, rewind points and weights it was saved
        with.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> model.save("/tmp/ticket.keras")
    >>> kl.load_model("/tmp/ticket.keras").layers[0].weight_names
    ['kernel']
    """
    import json
    import zipfile

    try:
        with zipfile.ZipFile(filepath) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as error:
        raise ValueError(
            f"Could not read '{filepath}' as a .keras file ({error}). "
            "keras_lottery.load_model loads files written by model.save("
            "'name.keras')."
        ) from error
    if not compile:
        config.pop("compile_config", None)
    with keras.saving.custom_object_scope(custom_objects or {}):
        model = keras.saving.deserialize_keras_object(
            config, safe_mode=safe_mode
        )
    loaders = []
    for _, layer in walk(model):
        if isinstance(layer, PrunableWrapper) or not layer.built:
            continue
        if registry.is_prunable_type(layer) and registry.prunable_weights(layer):
            loaders.append(layer)
            object.__setattr__(
                layer, "load_own_variables", _attaching_loader(layer)
            )
    try:
        model.load_weights(filepath)
    finally:
        for layer in loaders:
            if attached_wrapper(layer) is None:
                object.__delattr__(layer, "load_own_variables")
    from keras_lottery.core.rewind import capture_init

    capture_init(model, wrappers_too=False)
    return model


def _attaching_loader(layer):
    """A `load_own_variables` that attaches a wrapper if the file has masks."""

    def load_own_variables(store):
        keys = store.keys()  # a weights store, not a dict
        if any(key.startswith("lottery_") for key in keys):
            host = any(key.startswith("lottery_host_") for key in keys)
            wrapper = PrunableWrapper.attach(layer, "host" if host else "device")
            wrapper.layer.load_own_variables(store)
        else:
            type(layer).load_own_variables(layer, store)

    return load_own_variables
