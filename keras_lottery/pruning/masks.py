"""Mask I/O: read, write and shuffle the masks of a wrapped model.

Masks are keyed `"layer/weight"` as `get_masks` returns them. `set_masks`
also takes the other names of a layer, resolved as everywhere in
keras-lottery (`keras_lottery.pruning.names`): the wrapped layer's name
(`"fc/kernel"`, which its wrapper shares) or its key
(`"encoder/fc/kernel"`), and a layer alone (`"fc"`) for its only prunable
weight.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from keras_lottery.core.model import iter_weight_keys, require_wrappers
from keras_lottery.core.state import check_mask, host_array
from keras_lottery.pruning.names import select_layers


def get_masks(model: keras.Model) -> dict[str, np.ndarray]:
    """Returns every mask of a wrapped model, keyed `"layer/weight"`.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> {k: v.shape for k, v in kl.get_masks(model).items()}
    {'dense/kernel': (3, 2)}
    """
    return {
        key: wrapper.get_mask(name)
        for key, wrapper, name in iter_weight_keys(require_wrappers(model))
    }


def _weights_named(found, weights, key: str) -> list[str]:
    """The weight keys a `set_masks` key names (see the module)."""
    if key in weights:
        return [key]
    layer_of = {k: k[: -len(weights[k][1]) - 1] for k in weights}
    try:  # a layer alone: its only prunable weight
        layers = select_layers(found, key, argument="masks")
    except ValueError:
        layers = []
    if layers:
        named = [k for k in weights if layer_of[k] in layers]
        if any(len(found[layer].weight_names) > 1 for layer in layers):
            raise ValueError(
                f"`masks` key '{key}' names a layer with several prunable "
                f"weights; name the weight too. Its weights: {named}."
            )
        return named
    if "/" in key:
        layer, weight = key.rsplit("/", 1)
        try:
            layers = select_layers(found, layer, argument="masks")
        except ValueError:
            layers = []
        named = [k for k in weights
                 if layer_of[k] in layers and weights[k][1] == weight]
        if named:
            return named
    raise ValueError(
        f"`masks` has key '{key}', which names no prunable weight. Its "
        f"weights are {sorted(weights)}; a layer is named by its own name, "
        "or its key. If the models differ "
        "only in layer names, pass by='order'."
    )


def _by_name(model, masks, weights) -> dict[str, object]:
    found = require_wrappers(model)
    resolved: dict[str, object] = {}
    for key, value in masks.items():
        if not isinstance(key, str):
            raise TypeError(
                "`masks` is keyed by 'layer/weight' names, as get_masks "
                f"returns them. Received: key {key!r}."
            )
        for weight_key in _weights_named(found, weights, key):
            if weight_key in resolved:
                raise ValueError(
                    f"`masks` gives weight '{weight_key}' twice (the last "
                    f"as '{key}'). Give each weight one mask."
                )
            resolved[weight_key] = value
    return resolved


def set_masks(
    model: keras.Model,
    masks: Mapping[str, np.ndarray],
    *,
    strict: bool = True,
    by: str = "name",
) -> None:
    """Sets masks by `"layer/weight"` key, e.g. from `get_masks` of a ticket.

    Transfers a ticket between models of the same architecture (Morcos et
    al. 2019, "One ticket to win them all").

    Args:
        model: A model holding `PrunableWrapper` layers.
        masks: Arrays of 0/1 keyed like `get_masks(model)`. A layer may be
            named by its own name (`"fc/kernel"`) or its key
            (`"encoder/fc/kernel"`);
            a layer alone (`"fc"`) names its only prunable weight.
        strict: Require a mask for every prunable weight of `model`.
        by: `"name"` matches keys to the model's weights by name;
            `"order"` matches the i-th mask to the i-th prunable weight
            (for a model of the same architecture whose layers are named
            differently).

    Raises:
        ValueError: For an unknown key, a weight given twice, a missing
            key (when `strict`), a shape mismatch or values other than
            0/1. Nothing is changed unless every mask is valid.

    Example:

    >>> import keras, keras_lottery as kl
    >>> def make():
    ...     return kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                      keras.layers.Dense(2)]))
    >>> a, b = make(), make()  # the same architecture, other layer names
    >>> _ = kl.prune(a, 0.5, output_rate=0.5)
    >>> kl.set_masks(b, kl.get_masks(a), by="order")
    >>> [int(m.sum()) for m in kl.get_masks(b).values()]
    [3]
    """
    if not isinstance(masks, Mapping):
        raise TypeError(
            "`masks` must be a dict of 'layer/weight' -> array, as returned "
            f"by get_masks. Received: {type(masks).__name__}."
        )
    weights = {
        key: (wrapper, name)
        for key, wrapper, name in iter_weight_keys(require_wrappers(model))
    }
    if by == "order":
        if len(masks) != len(weights):
            raise ValueError(
                f"by='order' needs one mask per prunable weight: "
                f"{len(weights)} for model '{model.name}'. "
                f"Received: {len(masks)} masks."
            )
        resolved = dict(zip(weights, masks.values()))
    elif by == "name":
        resolved = _by_name(model, masks, weights)
    else:
        raise ValueError(f"`by` must be 'name' or 'order'. Received: by={by!r}")
    missing = [key for key in weights if key not in resolved]
    if strict and missing:
        raise ValueError(
            f"`masks` lacks {missing}. Pass a mask for every prunable weight, "
            "or strict=False to leave those masks unchanged."
        )
    checked = {
        key: check_mask(value, tuple(weights[key][0].mask_variable(
            weights[key][1]).shape), key)
        for key, value in resolved.items()
    }
    for key, array in checked.items():
        wrapper, name = weights[key]
        wrapper.mask_variable(name).assign(array.astype(bool))


def shuffle_masks(model: keras.Model, seed: int | None = None) -> None:
    """Moves each mask's ones to random positions, keeping its sparsity.

    The mask-shuffle control: same per-layer sparsity, structure destroyed.

    Args:
        model: A model holding `PrunableWrapper` layers.
        seed: Seed of the permutation.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((10,)),
    ...                                   keras.layers.Dense(10)]))
    >>> _ = kl.prune(model, 0.5, output_rate=0.5)
    >>> kl.shuffle_masks(model, seed=0)
    >>> [int(m.sum()) for m in kl.get_masks(model).values()]
    [50]
    """
    rng = np.random.default_rng(seed)
    for _, wrapper, name in iter_weight_keys(require_wrappers(model)):
        mask = wrapper.get_mask(name)
        wrapper.set_mask(name, rng.permutation(mask.ravel()).reshape(mask.shape))


def randomize_signs(model: keras.Model, seed: int | None = None) -> None:
    """Gives every kept prunable weight a random sign, keeping magnitudes.

    The sign ablation of pruning at initialization (Frankle et al. 2021,
    beside `shuffle_masks`, `rewind(model, to="random")` and
    `prune(..., prune_highest=True)`): each kept weight keeps `|w|` and
    gets `+` or `-` with probability 1/2, independently; masks and pruned
    weights (0.0) are unchanged, as are weights that are not prunable
    (biases). It changes the current weights, not the rewind point: call
    it after pruning (at init) or after `rewind`, then train; call
    `keras_lottery.capture_init(model)` to make the new signs theta_0.

    Args:
        model: A model holding `PrunableWrapper` layers.
        seed: Seed of the signs; the same seed gives the same signs.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((10,)),
    ...                                   keras.layers.Dense(10)]))
    >>> _ = kl.prune(model, 0.5, output_rate=0.5)
    >>> kernel = model.layers[0].layer.kernel
    >>> before = keras.ops.convert_to_numpy(kernel)
    >>> from keras_lottery.pruning.masks import randomize_signs
    >>> randomize_signs(model, seed=0)
    >>> after = keras.ops.convert_to_numpy(kernel)
    >>> bool(np.allclose(np.abs(after), np.abs(before)))
    True
    >>> bool((np.sign(after) != np.sign(before)).any())
    True
    """
    rng = np.random.default_rng(seed)
    for _, wrapper, name in iter_weight_keys(require_wrappers(model)):
        variable = wrapper.prunable_variable(name)
        value = np.asarray(host_array(variable))
        signs = np.where(rng.random(value.shape) < 0.5, -1, 1).astype(value.dtype)
        variable.assign(np.abs(value) * signs)
