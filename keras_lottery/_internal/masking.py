"""The masking mechanism: pruned weights held at exactly zero in the variable.

This is the one place that makes a Keras variable maskable, whatever model
or layer holds it. A masked variable keeps its pruned entries at exactly 0.0
through two hooks, so that nothing is added to the forward or backward pass:

- a weight constraint, which Keras optimizers apply after every update (in
  `fit`, in custom loops with `optimizer.apply`, and in JAX's stateless
  steps), multiplying the updated value by the mask;
- `assign` itself: every assignment (`set_weights`, `load_weights`, loading a
  `.keras` file, rewinding, user code) is multiplied by the mask, so no write
  can bring a pruned weight back.

The second hook needs a per-class subclass of the backend's variable class
whose `assign` masks; `attach` swaps the variable's class to it and `detach`
swaps it back. The constraint's output is assigned as it is (it is already
masked), so an optimizer step masks once.

Because pruned weights are zero in the variable, they contribute nothing to
any output, and their gradient does not reach the other weights. What differs
from multiplying by the mask in the forward pass: the gradient of a pruned
weight is computed (it is discarded by the constraint), so per-variable
`clipnorm` and `global_clipnorm` see it. See docs/concepts.md.
"""

from __future__ import annotations

import contextlib

import keras
from keras import ops

# Keras keeps these private; they exist in every Keras 3 release.
from keras.src.backend import StatelessScope as _StatelessScope
from keras.src.backend import get_stateless_scope as _get_stateless_scope

_MASKED_CLASSES: dict = {}


class MaskConstraint(keras.constraints.Constraint):
    """Multiplies a weight by its mask after each optimizer update.

    Composes with the weight's own constraint (applied first).

    Args:
        mask: A boolean `keras.Variable` of the weight's shape.
        inner: The constraint the weight had before, or None.
    """

    def __init__(self, mask, inner=None):
        self.mask = mask
        self.inner = inner
        self._last = None

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        mask = mask_value(self.mask)
        if mask is None:
            return w
        masked = apply_mask(w, mask)
        # Marks the value as masked already: the `assign` that follows in the
        # optimizer does not multiply it a second time.
        self._last = masked
        return masked

    def get_config(self):  # never serialized: the layer config keeps `inner`
        return {}


def _multiply(value, mask):
    return value * mask.astype(value.dtype)


_JAX_MULTIPLY = []  # the jitted `_multiply`, made at first use


def apply_mask(value, mask):
    """`value` with zeros where the boolean `mask` (an array) is False.

    A multiplication, not `where`: with a random mask, PyTorch's CPU
    `where` branches on every element and ran about 5x slower than a
    multiply over LeNet's first kernel (measured here). Under JAX the cast
    and the multiply are one compiled function, so that an eager call
    (`prune`, `rewind`, `set_weights`) makes one pass over the weight
    instead of two; inside a traced step it is inlined as before.
    """
    if isinstance(value, keras.Variable):
        value = value.value
    backend = keras.backend.backend()
    if backend == "torch":
        return value * mask  # bool promotes to the float type, in one pass
    if backend == "jax":
        if not _JAX_MULTIPLY:
            import jax

            _JAX_MULTIPLY.append(jax.jit(_multiply))
        return _JAX_MULTIPLY[0](value, mask)
    return value * ops.cast(mask, value.dtype)


def masks_on_assign(variable) -> bool:
    """Whether assigning to `variable` now multiplies by a known mask, and
    so hands the variable a new buffer whatever value it is given."""
    if not is_attached(variable):
        return False
    return mask_value(variable._lottery_constraint.mask) is not None


def _donated(value) -> bool:
    """Whether a JAX array's buffer was donated to a compiled step.

    `train_on_batch` under JAX donates the model's variables to its step and
    then assigns the step's results back one by one (`jax_state_sync`):
    a kernel may be assigned while its mask still holds the donated buffer.
    The kernel's new value is the step's own result, masked already.
    """
    is_deleted = getattr(value, "is_deleted", None)
    return bool(is_deleted is not None and is_deleted())


def mask_value(mask):
    """The current value of a mask variable, or None where none is known.

    Under JAX, `fit` runs the optimizer in a stateless scope of its own that
    maps only the trainable and optimizer variables, and removes the
    values of the model's other variables for the duration of an epoch.
    The mask is then found in an enclosing scope (see `_install_jax_hook`).
    Outside any scope, a mask without a value is one `fit` removed (or
    one whose buffer `train_on_batch` donated): the value being assigned is
    the step's own result, masked already, and None is returned. Inside a
    scope that cannot see the mask, it is an error.
    """
    scope = _get_stateless_scope()
    while scope is not None:
        value = scope.get_current_value(mask)
        if value is not None:
            return value
        scope = getattr(scope, "original_scope", None)
    if mask._value is not None and not _donated(mask._value):
        return mask.value
    if _get_stateless_scope() is not None:
        raise RuntimeError(
            f"keras_lottery cannot see the mask '{mask.path}' in this "
            "training step. Under JAX, the optimizer's stateless scope maps "
            "only trainable and optimizer variables: in a train_step of your "
            "own, apply the optimizer inside keras.StatelessScope("
            "state_mapping=[(mask, value), ...]) holding the masks' values "
            "(model.non_trainable_variables), as keras_lottery does for "
            "Keras' own train_step."
        )
    return None


def _masked_class(cls: type) -> type:
    """The subclass of a backend variable class whose `assign` masks."""
    if cls not in _MASKED_CLASSES:

        def assign(self, value):
            constraint = self._lottery_constraint
            if value is constraint._last:
                constraint._last = None
            else:
                mask = mask_value(constraint.mask)
                if mask is not None:
                    value = apply_mask(
                        self._convert_to_tensor(value, dtype=self._dtype), mask
                    )
                    if _DEFERRED:  # masked now: nothing left to do at the end
                        _DEFERRED[-1].pop(id(self), None)
            return cls.assign(self, value)

        _MASKED_CLASSES[cls] = type(
            f"Masked{cls.__name__}",
            (cls,),
            {"assign": assign, "__module__": cls.__module__},
        )
    return _MASKED_CLASSES[cls]


def _mask_class(cls: type) -> type:
    """The subclass of a backend variable class for masks.

    Assigning a mask (by `prune`, `set_weights`, loading a file) masks its
    weight again at once, so that a weight is never out of step with its
    mask.
    """
    key = ("mask", cls)
    if key not in _MASKED_CLASSES:

        def assign(self, value):
            result = cls.assign(self, value)
            weight = getattr(self, "_lottery_weight", None)
            if weight is not None and _get_stateless_scope() is None:
                if _DEFERRED:
                    _DEFERRED[-1][id(weight)] = weight
                else:
                    reapply(weight)
            return result

        _MASKED_CLASSES[key] = type(
            f"Mask{cls.__name__}",
            (cls,),
            {"assign": assign, "__module__": cls.__module__},
        )
    return _MASKED_CLASSES[key]


# Inside `remask_at_end`: the weights whose mask changed, not masked since.
_DEFERRED: list[dict] = []


@contextlib.contextmanager
def remask_at_end():
    """Inside, assigning a mask does not mask its weight at once: each
    weight is masked when the block ends (or raises), unless a masked
    assign wrote it in between, which masked it anyway.

    For a prune followed by a rewind (`pruning.cycle.prune_and_rewind`):
    the rewind writes every pruned weight through its new mask, so masking
    the old values first would be a pass over every weight for nothing.
    Outside the block, a weight and its mask are never out of step.
    """
    _DEFERRED.append({})
    try:
        yield
    finally:
        for weight in _DEFERRED.pop().values():
            reapply(weight)


def is_attached(variable) -> bool:
    """Whether `variable` is masked by `attach`."""
    return getattr(variable, "_lottery_constraint", None) is not None


def attach(variable, mask) -> None:
    """Makes `variable` masked by `mask` (a boolean variable of its shape).

    The current value is masked at once.
    """
    object.__setattr__(mask, "_lottery_is_mask", True)
    object.__setattr__(mask, "_lottery_weight", variable)
    if type(mask) not in _MASKED_CLASSES.values():
        mask.__class__ = _mask_class(type(mask))
    if is_attached(variable):
        constraint = variable._lottery_constraint
        constraint.mask = mask
    else:
        constraint = MaskConstraint(mask, variable.constraint)
        object.__setattr__(variable, "_lottery_constraint", constraint)
        variable.__class__ = _masked_class(type(variable))
        variable.constraint = constraint
    variable.assign(variable.value)


def detach(variable) -> None:
    """Undoes `attach`: the variable and its constraint are as before."""
    if not is_attached(variable):
        return
    constraint = variable._lottery_constraint
    variable.constraint = constraint.inner
    variable.__class__ = type(variable).__mro__[1]
    object.__setattr__(variable, "_lottery_constraint", None)
    mask = constraint.mask
    object.__setattr__(mask, "_lottery_weight", None)


def reapply(variable) -> None:
    """Masks the variable's current value again (after its mask changed)."""
    if is_attached(variable):
        variable.assign(variable.value)


def _install_jax_hook() -> None:
    """Lets the optimizer in JAX's `fit` see the masks.

    JAX's training step maps the model's non-trainable variables (the
    masks among them) only while computing the loss; the optimizer's own
    stateless scope, where the constraints run, maps the trainable and
    optimizer variables only, and `fit` removes the other variables'
    values for the epoch. This wraps `JAXTrainer.train_step` in an outer
    scope holding the masks' values from the step's state, where
    `mask_value` finds them: every model holding masks, however it was
    made (wrapped, loaded, or built around a wrapped model), trains
    without further set-up. A model with no masks runs as before; the
    wrapping runs when the step is traced, not at every step.
    """
    if keras.backend.backend() != "jax":
        return
    from keras.src.backend.jax.trainer import JAXTrainer

    if getattr(JAXTrainer.train_step, "_keras_lottery", False):
        return
    train_step = JAXTrainer.train_step

    def masked_train_step(self, state, data):
        mapping = [
            (variable, value)
            for variable, value in zip(self.non_trainable_variables, state[1])
            if getattr(variable, "_lottery_is_mask", False)
        ]
        if not mapping:
            return train_step(self, state, data)
        with _StatelessScope(state_mapping=mapping, collect_losses=False):
            return train_step(self, state, data)

    masked_train_step._keras_lottery = True
    JAXTrainer.train_step = masked_train_step


_install_jax_hook()


def current_call_context():
    """The call context of the layer call in progress (its `training`)."""
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("current_call_ctx")
