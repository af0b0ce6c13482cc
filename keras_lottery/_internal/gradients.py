"""Gradients and Hessian-vector products on every backend, one place.

`gradients(fn, variables)` differentiates a scalar `fn()` (any Keras code
reading `variables`: a model call and a loss) with respect to Keras
variables, with each backend's own automatic differentiation:
`tf.GradientTape`, `jax.grad` (the variables' values substituted through
`keras.StatelessScope`, as `Layer.stateless_call` does), or
`torch.autograd.grad`. `hessian_vector_product(fn, variables, vectors)`
differentiates twice (`H v` = the gradient of `grad(fn) . v`). Results are
NumPy arrays; a variable `fn` does not depend on gets zeros.

Example:

>>> import keras, numpy as np
>>> from keras_lottery._internal.gradients import gradients
>>> v = keras.Variable(np.array([1.0, 2.0], "float32"))
>>> value, (grad,) = gradients(lambda: keras.ops.sum(v * v), [v])
>>> float(value), grad.tolist()
(5.0, [2.0, 4.0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops


def _numpy(values, variables) -> list[np.ndarray]:
    """NumPy arrays; None (a variable `fn` ignores) becomes zeros."""
    out = []
    for value, variable in zip(values, variables):
        if value is None:
            out.append(np.zeros(tuple(variable.shape), "float32"))
        else:
            out.append(np.asarray(ops.convert_to_numpy(value)))
    return out


def _tensorflow(fn, variables, vectors):
    import tensorflow as tf

    values = [v.value for v in variables]
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            value, aux = fn()
        grads = [
            tf.convert_to_tensor(g) if g is not None else None  # IndexedSlices
            for g in inner.gradient(value, values)
        ]
        if vectors is None:
            return value, aux, grads
        dot = tf.add_n([
            tf.reduce_sum(g * tf.cast(u, g.dtype))
            for g, u in zip(grads, vectors) if g is not None
        ] or [tf.constant(0.0)])
    product = outer.gradient(dot, values)
    return value, aux, [tf.convert_to_tensor(p) if p is not None else None
                        for p in product]


def _jax(fn, variables, vectors):
    import jax
    import jax.numpy as jnp

    def pure(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn()

    values = [v.value for v in variables]
    (value, aux), grads = jax.value_and_grad(pure, has_aux=True)(values)
    if vectors is None:
        return value, aux, grads

    def dot(values):
        return sum(
            jnp.vdot(g, jnp.asarray(u, g.dtype))
            for g, u in zip(jax.grad(pure, has_aux=True)(values)[0], vectors)
        )

    return value, aux, jax.grad(dot)(values)


def _torch(fn, variables, vectors):
    import torch

    values = [v.value for v in variables]
    value, aux = fn()
    grads = torch.autograd.grad(
        value, values, create_graph=vectors is not None, allow_unused=True
    )
    if vectors is None:
        return value, aux, grads
    dot = sum(
        (g * torch.as_tensor(u, dtype=g.dtype, device=g.device)).sum()
        for g, u in zip(grads, vectors) if g is not None
    )
    if not torch.is_tensor(dot) or not dot.requires_grad:
        return value, aux, [None] * len(values)
    return value, aux, torch.autograd.grad(dot, values, allow_unused=True)


_BACKENDS = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}


def _run(fn, variables, vectors, has_aux=False):
    backend = keras.backend.backend()
    if backend not in _BACKENDS:
        raise NotImplementedError(
            f"Gradients are computed on the TensorFlow, JAX and PyTorch "
            f"backends. Received: backend {backend!r}."
        )
    pair = fn if has_aux else (lambda: (fn(), None))
    value, aux, out = _BACKENDS[backend](pair, list(variables), vectors)
    value = float(ops.convert_to_numpy(value))
    if has_aux:
        value = (value, keras.tree.map_structure(
            lambda a: np.asarray(ops.convert_to_numpy(a)), aux))
    return value, _numpy(out, variables)


def gradients(
    fn: Callable[[], object],
    variables: Sequence[keras.Variable],
    *,
    has_aux: bool = False,
) -> tuple[float, list[np.ndarray]]:
    """`fn()` and its gradients with respect to `variables`, as NumPy.

    Args:
        fn: Takes no argument and returns a scalar tensor computed from
            the current values of `variables` (e.g. a model's loss); with
            `has_aux`, a pair `(scalar, aux)` of which only the scalar is
            differentiated (e.g. `aux` the model's outputs).
        variables: Keras variables (trainable ones: the backends only
            differentiate those).
        has_aux: Whether `fn` returns `(scalar, aux)`.

    Returns:
        The value of `fn()` (with `has_aux`: `(value, aux)`, `aux` as
        NumPy) and one gradient per variable (zeros for a variable `fn`
        does not read).
    """
    return _run(fn, variables, None, has_aux)


def hessian_vector_product(
    fn: Callable[[], object],
    variables: Sequence[keras.Variable],
    vectors: Sequence[np.ndarray],
) -> tuple[float, list[np.ndarray]]:
    """`fn()` and `H v`: its Hessian times `vectors`, one per variable.

    Computed by differentiating twice, `H v = grad(grad(fn) . v)`, with `v`
    held constant, as Wang et al. (2020) compute GraSP's `Hg`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_lottery._internal.gradients import hessian_vector_product
    >>> v = keras.Variable(np.array([1.0, 2.0], "float32"))
    >>> f = lambda: keras.ops.sum(v * v * v)  # H = diag(6 v)
    >>> _, (hv,) = hessian_vector_product(f, [v], [np.array([1.0, 1.0])])
    >>> hv.tolist()
    [6.0, 12.0]
    """
    if len(vectors) != len(variables):
        raise ValueError(
            f"One vector per variable: {len(variables)} variables. "
            f"Received: {len(vectors)} vectors."
        )
    return _run(fn, variables, [np.asarray(u) for u in vectors])
