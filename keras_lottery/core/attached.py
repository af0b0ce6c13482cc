"""Wrappers attached in place: how they are found, saved and loaded.

`PrunableWrapper.attach(layer)` leaves the model's graph alone; the wrapper
is registered beside its layer (`state.ATTACHED`), and the layer's
`save_own_variables` / `load_own_variables` are replaced, on that instance
only, by functions that also save and load the wrapper's masks and rewind
point under keys `lottery_0`, `lottery_1`, ... (`lottery_host_0`, ... for
rewind points kept in host memory).
"""

from __future__ import annotations

import functools

from keras import ops

from keras_lottery.core.state import (
    ATTACHED,
    WithoutKeys,
    attached_wrapper,
    set_untracked,
)

_SAVE_LOAD = ("save_own_variables", "load_own_variables")


def attach(cls, layer, rewind_point: str):
    """Builds a `cls` wrapper for `layer` and registers it in place."""
    existing = attached_wrapper(layer)
    if existing is not None:
        return existing
    if not layer.built:
        raise ValueError(
            f"Layer '{layer.name}' is not built, so it has no weights to "
            "mask yet. Build the model (call it on a batch) before "
            "keras_lottery.wrap(model)."
        )
    wrapper = cls(layer, rewind_point, name=f"prunable_{layer.name}")
    wrapper.build()
    ATTACHED[layer] = wrapper
    set_untracked(layer, "save_own_variables", functools.partial(save, wrapper))
    set_untracked(layer, "load_own_variables", functools.partial(load, wrapper))
    return wrapper


def detach(wrapper) -> None:
    """Unregisters an attached wrapper and gives its layer back its own
    save and load methods (nothing happens for a wrapper in the graph)."""
    layer = wrapper.layer
    if attached_wrapper(layer) is wrapper:
        del ATTACHED[layer]
        for attribute in _SAVE_LOAD:
            if attribute in layer.__dict__:
                object.__delattr__(layer, attribute)


def save(wrapper, store) -> None:
    """The layer's weights, then the wrapper's state under `lottery_*` keys."""
    layer = wrapper.layer
    type(layer).save_own_variables(layer, store)
    for i, variable in enumerate(wrapper._state_variables()):
        store[f"lottery_{i}"] = ops.convert_to_numpy(variable)
    for i, value in enumerate(wrapper._host_values()):
        store[f"lottery_host_{i}"] = value.array


def load(wrapper, store) -> None:
    """Inverse of `save`: the masks first, so the weights loaded next are
    masked by the masks of the file."""
    layer = wrapper.layer
    keys = list(store.keys())
    hidden = set()
    if any(k.startswith("lottery_") for k in keys):
        hidden = load_host_values(wrapper, store, "lottery_host_")
    state = [k for k in keys if k.startswith("lottery_") and k not in hidden]
    if state:
        variables = wrapper._state_variables()
        if len(state) != len(variables):
            raise ValueError(
                f"Layer '{layer.name}' holds {len(variables)} keras_lottery "
                "state variables (masks and rewind points), but the file has "
                f"{len(state)}. Was it saved from a model wrapped with "
                "different include/exclude arguments?"
            )
        for i, variable in enumerate(variables):
            variable.assign(store[f"lottery_{i}"])
    type(layer).load_own_variables(
        layer, WithoutKeys(store, set(state) | hidden)
    )


def load_host_values(wrapper, store, prefix: str) -> set:
    """Loads the rewind values a wrapper keeps on the host; returns the keys
    read, so that the caller can hide them from Keras' own loading."""
    keys = [k for k in store.keys() if k.startswith(prefix)]  # noqa: SIM118
    values = wrapper._host_values()
    if len(keys) != len(values):
        raise ValueError(
            f"Layer '{wrapper.layer.name}' keeps {len(values)} rewind values "
            f"on the host, but the file has {len(keys)}: it was saved with "
            "another rewind_point ('host' or 'device'). Wrap the model with "
            "the rewind_point it was saved with."
        )
    for i, value in enumerate(values):
        value.assign(store[f"{prefix}{i}"])
    return set(keys)
