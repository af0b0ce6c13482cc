"""Rewind targets: theta_0 (init), a checkpoint at step k, a random re-init."""

from __future__ import annotations

import functools
import os
import warnings
import weakref

import keras
import numpy as np
from keras import ops

from keras_lottery.core.model import check_model, require_wrappers, wrappers
from keras_lottery.core.state import host_array, host_copy
from keras_lottery.core.wrapper import PrunableWrapper

REWIND_TARGETS = ("init", "checkpoint", "random")

# The one store of rewind points for the weights no wrapper holds (a
# wrapper keeps its own weights' theta_0) and of checkpoints:
# model -> {"init" | "checkpoint": [(variable, array), ...]}. Kept beside the
# model (not on it) so that Keras' attribute tracking never sees NumPy data;
# `model.save` writes it into the .keras file as an asset (ASSET), and
# `keras_lottery.load_model` reads it back.
_POINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
ASSET = "keras_lottery_rewind_points.npz"


def _remember(model, kind: str, pairs: list) -> None:
    """Stores a rewind point and makes `model.save` write the store."""
    _POINTS.setdefault(model, {})[kind] = pairs
    if "save_assets" not in model.__dict__:
        object.__setattr__(
            model, "save_assets", functools.partial(_save_points, model)
        )


def _save_points(model, directory: str) -> None:
    own = getattr(type(model), "save_assets", None)
    if own is not None:
        own(model, directory)
    index = {id(v): i for i, v in enumerate(model.trainable_weights)}
    arrays = {
        f"{kind}_{index[id(v)]}": array
        for kind, pairs in _POINTS.get(model, {}).items()
        for v, array in pairs
        if id(v) in index
    }
    with open(os.path.join(directory, ASSET), "wb") as file:
        np.savez(file, **arrays)


def restore_points(model, arrays: dict) -> None:
    """Sets the store from arrays saved by `model.save` (`{kind}_{index}`
    keys, the index in `model.trainable_weights`)."""
    variables = model.trainable_weights
    points: dict[str, list] = {}
    for key, array in arrays.items():
        kind, index = key.rsplit("_", 1)
        variable = variables[int(index)]
        if tuple(variable.shape) != array.shape:
            raise ValueError(
                f"The saved rewind point '{key}' has shape {array.shape}, but "
                f"weight '{variable.path}' has shape {tuple(variable.shape)}: "
                "the file does not belong to this model."
            )
        points.setdefault(kind, []).append((variable, np.array(array)))
    for kind, pairs in points.items():
        _remember(model, kind, pairs)


def _to_numpy(variable) -> np.ndarray:
    return np.array(host_array(variable), copy=True)


def _wrapper_owned(model) -> set[int]:
    owned = set()
    for wrapper in wrappers(model).values():
        owned.update(id(v) for v in wrapper.layer.trainable_weights)
    return owned


def capture_init(model: keras.Model, *, wrappers_too: bool = True) -> None:
    """Records the model's current weights as its rewind point theta_0.

    `keras_lottery.wrap` calls this for you. Call it yourself on a model
    whose wrappers you built by hand (a subclassed model) or after loading
    a wrapped model, before its first training, to include the weights that
    no wrapper holds (biases of unwrapped layers, normalization).

    Args:
        model: A built model.
        wrappers_too: Also overwrite each wrapper's stored initial values
            with the current weights.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> _ = model.layers[0].layer.kernel.assign(np.ones((3, 2)))
    >>> kl.capture_init(model)  # theta_0 is now the all-ones kernel
    >>> _ = model.layers[0].layer.kernel.assign(np.zeros((3, 2)))
    >>> kl.rewind(model, "init")
    >>> float(keras.ops.convert_to_numpy(model.layers[0].layer.kernel).sum())
    6.0
    """
    check_model(model)
    owned = _wrapper_owned(model)
    _remember(model, "init", [
        (v, _to_numpy(v)) for v in model.trainable_weights if id(v) not in owned
    ])
    if wrappers_too:
        for wrapper in wrappers(model).values():
            wrapper.capture_initial()


def checkpoint(model: keras.Model) -> None:
    """Records every trainable weight now, as the target of late rewinding.

    Late rewinding (Frankle et al. 2019, "Stabilizing the Lottery Ticket
    Hypothesis") rewinds to the weights at an early training step k instead
    of to theta_0. `LotterySchedule` and `lottery_search` take this
    checkpoint at step k for you.

    Args:
        model: A built model.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> kl.checkpoint(model)
    >>> kl.rewind(model, to="checkpoint")
    """
    check_model(model)
    _remember(model, "checkpoint", [
        (v, _to_numpy(v)) for v in model.trainable_weights
    ])


def has_checkpoint(model: keras.Model) -> bool:
    """Whether `checkpoint(model)` was taken."""
    return "checkpoint" in _POINTS.get(model, {})


def get_rewind_point(model: keras.Model, to: str = "init") -> list[np.ndarray]:
    """The weights `rewind(model, to)` would set, in `trainable_weights` order.

    For `to="init"`, weights that were never captured are returned at their
    current value.
    """
    check_model(model)
    if to == "checkpoint":
        _require_checkpoint(model)
        return [array.copy() for _, array in _POINTS[model]["checkpoint"]]
    if to != "init":
        raise ValueError(
            f"get_rewind_point takes to='init' or 'checkpoint'. Received: {to!r}"
        )
    values = {id(v): a for v, a in _POINTS.get(model, {}).get("init", [])}
    for wrapper in wrappers(model).values():
        for name, v in wrapper._weights.items():
            values[id(v)] = host_copy(wrapper._initials[name])
        for v, init in zip(wrapper._other_weights, wrapper._other_initials):
            values[id(v)] = host_copy(init)
    return [
        values[id(v)] if id(v) in values else _to_numpy(v)
        for v in model.trainable_weights
    ]


def set_rewind_point(
    model: keras.Model, values: list[np.ndarray], to: str = "init"
) -> None:
    """Sets a rewind point from arrays in `trainable_weights` order.

    The inverse of `get_rewind_point`; used to resume a search.
    """
    check_model(model)
    variables = model.trainable_weights
    if len(values) != len(variables):
        raise ValueError(
            f"Expected {len(variables)} arrays, one per trainable weight of "
            f"model '{model.name}'. Received: {len(values)}."
        )
    pairs = []
    for v, a in zip(variables, values):
        a = np.asarray(a)
        if a.shape != tuple(v.shape):
            raise ValueError(
                f"Rewind value for '{v.path}' must have shape {tuple(v.shape)}."
                f" Received: shape {a.shape}."
            )
        pairs.append((v, a.copy()))
    if to == "checkpoint":
        _remember(model, "checkpoint", pairs)
        return
    by_id = {id(v): a for v, a in pairs}
    owned = _wrapper_owned(model)
    _remember(model, "init", [(v, a) for v, a in pairs if id(v) not in owned])
    for wrapper in wrappers(model).values():
        for name, v in wrapper._weights.items():
            wrapper._initials[name].assign(by_id[id(v)])
        for v, init in zip(wrapper._other_weights, wrapper._other_initials):
            init.assign(by_id[id(v)])


def _require_checkpoint(model):
    if not has_checkpoint(model):
        raise ValueError(
            f"rewind(model, to='checkpoint') needs a checkpoint, but none was "
            f"taken for model '{model.name}'. Call "
            "keras_lottery.checkpoint(model) at the training step to rewind "
            "to, or use to='init'."
        )


def _reseed(config, rng: np.random.Generator):
    """Returns a copy of a layer config whose initializers get new seeds."""
    if isinstance(config, dict):
        out = {k: _reseed(v, rng) for k, v in config.items()}
        inner = out.get("config")
        if (
            out.get("module") == "keras.initializers"
            and isinstance(inner, dict)
            and "seed" in inner
        ):
            inner["seed"] = int(rng.integers(0, 2**31 - 1))
        return out
    if isinstance(config, list):
        return [_reseed(v, rng) for v in config]
    return config


def _fresh_weights(layer, rng) -> list[np.ndarray]:
    """New trainable weights for `layer`, drawn from its own initializers."""
    config = _reseed(keras.saving.serialize_keras_object(layer), rng)
    clone = keras.saving.deserialize_keras_object(config)
    if not clone.built:  # the serialized config may already build it
        clone.build_from_config(layer.get_build_config())
    return [_to_numpy(v) for v in clone.trainable_weights]


def _leaf_layers_with_weights(model):
    """Layers owning trainable weights, wrappers resolved to their layer."""
    for layer in model.layers:
        if isinstance(layer, PrunableWrapper):
            yield layer.layer
        elif isinstance(layer, keras.Model):
            yield from _leaf_layers_with_weights(layer)
        elif layer.trainable_weights:
            yield layer


def rewind(model: keras.Model, to: str = "init", *, seed: int | None = None) -> None:
    """Sets the model's trainable weights back to a rewind point.

    Masks are left as they are, so a pruned weight keeps exactly zero
    effect after every rewind.

    Args:
        model: A model holding `PrunableWrapper` layers.
        to: `"init"`: theta_0, the weights captured when the model was
            wrapped (the lottery ticket); `"checkpoint"`: the weights saved
            by `checkpoint(model)` at step k (late rewinding); `"random"`:
            a fresh draw from each layer's own initializers (the random
            re-initialization control of Frankle & Carbin 2019).
        seed: Seed for `to="random"`; the same seed gives the same draw.

    Raises:
        ValueError: For an unknown target, a model without wrappers, or
            `to="checkpoint"` before any checkpoint was taken.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> before = model.get_weights()
    >>> _ = model.layers[0].layer.kernel.assign(np.ones((3, 2)))
    >>> kl.rewind(model, to="init")
    >>> all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    True
    """
    if to not in REWIND_TARGETS:
        raise ValueError(
            f"`to` must be one of {REWIND_TARGETS}. Received: to={to!r}"
        )
    found = require_wrappers(model)
    if to == "init":
        for wrapper in found.values():
            wrapper.restore_initial()
        recorded = _POINTS.get(model, {}).get("init")
        if recorded is None:
            others = [
                v.path for v in model.trainable_weights
                if id(v) not in _wrapper_owned(model)
            ]
            if others:
                warnings.warn(
                    f"Rewinding the wrapped layers of model '{model.name}' "
                    f"only: the initial values of {len(others)} other "
                    f"trainable weights (e.g. {others[0]}) were not captured "
                    "in this process. Call keras_lottery.capture_init(model) "
                    "before training to include them.",
                    stacklevel=2,
                )
        for v, array in recorded or []:
            v.assign(array)
    elif to == "checkpoint":
        _require_checkpoint(model)
        for v, array in _POINTS[model]["checkpoint"]:
            v.assign(array)
    else:
        rng = np.random.default_rng(seed)
        for layer in _leaf_layers_with_weights(model):
            for v, array in zip(layer.trainable_weights, _fresh_weights(layer, rng)):
                v.assign(array)


def reset_optimizer(optimizer: keras.optimizers.Optimizer) -> None:
    """Zeros an optimizer's slot variables and step counter.

    After pruning and rewinding, the next round should start as the first
    did: no Adam moments from the previous round and a step count of 0
    (which also restarts learning-rate schedules). The learning rate itself
    is kept.

    Args:
        optimizer: A Keras 3 optimizer (built or not).

    Example:

    >>> import keras, keras_lottery as kl
    >>> opt = keras.optimizers.Adam()
    >>> _ = opt.iterations.assign(10)
    >>> kl.reset_optimizer(opt)
    >>> int(opt.iterations)
    0
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "reset_optimizer takes a keras.optimizers.Optimizer. Received: "
            f"optimizer={optimizer!r} of type {type(optimizer).__name__}."
        )
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:  # LossScaleOptimizer: keep the loss scale
        reset_optimizer(inner)
        optimizer.iterations.assign(0)
        return
    keep = {id(getattr(optimizer, "_learning_rate", None))}
    for variable in optimizer.variables:
        if id(variable) in keep:
            continue
        variable.assign(ops.zeros(variable.shape, variable.dtype))
