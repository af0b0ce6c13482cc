"""Small, offline data loaders for the demo, the examples and the benchmarks.

- `load_mnist`: MNIST from an `mnist.npz` in Keras' layout (`x_train`,
  `y_train`, `x_test`, `y_test`), scaled to [0, 1] float32, with the last
  `validation` training images held out for validation, as Frankle & Carbin
  (2019) do (55,000 / 5,000).
- `load_mnist1d`: MNIST-1D (Greydanus & Kobak 2024) generated locally by the
  `mnist1d` package: 4,000 training and 1,000 test sequences of length 40.
  Nothing is downloaded.

Both return a `Dataset`, a small frozen dataclass of NumPy arrays.
`iteration_batches` feeds `fit` an exact number of training iterations,
the unit of the lottery-ticket papers (e.g. 50,000 iterations at batch 60).
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import keras
import numpy as np

MNIST_ENV = "KERAS_LOTTERY_MNIST"
_MNIST_KEYS = {
    "x_train": (60000, 28, 28),
    "y_train": (60000,),
    "x_test": (10000, 28, 28),
    "y_test": (10000,),
}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Arrays of one classification data set, and where they came from.

    Attributes:
        x_train, y_train: Training inputs (float32) and labels (int64).
        x_val, y_val: Validation split (possibly empty).
        x_test, y_test: Test split.
        name: A short name, e.g. `"mnist"` or `"mnist1d"`.
        source: Where the data came from, in words (a path, a generator).
        num_classes: Number of classes.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    source: str
    num_classes: int = 10

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example."""
        return tuple(self.x_train.shape[1:])

    def describe(self) -> str:
        """One line: the name, split sizes and source.

        Example:

        >>> from keras_lottery.apps.data import load_mnist1d
        >>> load_mnist1d().describe()  # doctest: +ELLIPSIS
        'mnist1d: 4000 train / 0 validation / 1000 test, inputs (40,), ...'
        """
        return (
            f"{self.name}: {len(self.y_train)} train / {len(self.y_val)} "
            f"validation / {len(self.y_test)} test, inputs {self.input_shape}, "
            f"from {self.source}"
        )

    def subset(self, train: int | None = None, test: int | None = None) -> Dataset:
        """The first `train` training and `test` test examples (for quick runs).

        The validation split is cut to at most `train // 10` examples
        (at least one where any exist).

        Example:

        >>> from keras_lottery.apps.data import load_mnist1d
        >>> small = load_mnist1d(validation=500).subset(train=100, test=50)
        >>> len(small.y_train), len(small.y_val), len(small.y_test)
        (100, 10, 50)
        """
        n_val = len(self.y_val)
        if train is not None and n_val:
            n_val = min(n_val, max(1, train // 10))
        return dataclasses.replace(
            self,
            x_train=self.x_train[:train],
            y_train=self.y_train[:train],
            x_val=self.x_val[:n_val],
            y_val=self.y_val[:n_val],
            x_test=self.x_test[:test],
            y_test=self.y_test[:test],
        )


def _split(x, y, validation: int, what: str):
    if isinstance(validation, bool) or not isinstance(validation, int):
        raise TypeError(
            f"`validation` is a number of examples, an int. Received: "
            f"validation={validation!r}"
        )
    if not 0 <= validation < len(y):
        raise ValueError(
            f"`validation` must be in [0, {len(y)}) for {what}, which has "
            f"{len(y)} training examples. Received: validation={validation}"
        )
    cut = len(y) - validation
    return x[:cut], y[:cut], x[cut:], y[cut:]


def default_mnist_path() -> Path | None:
    """The MNIST path from `$KERAS_LOTTERY_MNIST`, or None when unset."""
    value = os.environ.get(MNIST_ENV)
    return Path(value) if value else None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        where = " (from $KERAS_LOTTERY_MNIST)" if path == default_mnist_path() else ""
        raise FileNotFoundError(
            f"No MNIST file at {path}{where}. Expected an mnist.npz in Keras "
            "layout with arrays x_train (60000, 28, 28), y_train (60000,), "
            "x_test (10000, 28, 28) and y_test (10000,). Pass its path, or "
            f"set ${MNIST_ENV}."
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as error:  # a zip/npz error of any kind
        raise ValueError(
            f"Could not read {path} as a NumPy .npz file: "
            f"{type(error).__name__}: {error}. Expected an mnist.npz in Keras "
            "layout (x_train, y_train, x_test, y_test)."
        ) from error
    missing = sorted(set(_MNIST_KEYS) - set(arrays))
    if missing:
        raise ValueError(
            f"{path} is not an mnist.npz in Keras layout: it lacks {missing}. "
            f"Expected keys {sorted(_MNIST_KEYS)}. Received keys: "
            f"{sorted(arrays)}."
        )
    return arrays


def _check_mnist(arrays: dict[str, np.ndarray], source: str) -> None:
    for key in ("x_train", "x_test"):
        shape = arrays[key].shape
        if len(shape) != 3 or shape[1:] != (28, 28):
            raise ValueError(
                f"MNIST array '{key}' in {source} must have shape (n, 28, 28). "
                f"Received: shape {shape}."
            )
    for x_key, y_key in (("x_train", "y_train"), ("x_test", "y_test")):
        x, y = arrays[x_key], arrays[y_key]
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(
                f"MNIST labels '{y_key}' in {source} must be one label per "
                f"image: shape ({len(x)},). Received: shape {y.shape}."
            )
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise ValueError(
                f"MNIST labels '{y_key}' in {source} must be digits 0-9. "
                f"Received values from {y.min()} to {y.max()}."
            )


def load_mnist(
    path: str | os.PathLike | None = None,
    *,
    validation: int = 5000,
    flatten: bool = True,
) -> Dataset:
    """Loads MNIST from an `mnist.npz` in Keras layout, scaled to [0, 1].

    The file is found, in order: `path`; the environment variable
    `KERAS_LOTTERY_MNIST`; else `keras.datasets.mnist.load_data()` (which
    needs the internet or Keras' cache). The last `validation` training
    images become the validation split: 55,000 / 5,000 by default, as in
    Frankle & Carbin (2019).

    Args:
        path: An `.npz` with `x_train` (n, 28, 28), `y_train` (n,),
            `x_test` (m, 28, 28) and `y_test` (m,).
        validation: Number of training images held out, from the end.
        flatten: Return images as vectors of 784 (True) or as 28x28 (False).

    Returns:
        A `Dataset` with float32 inputs in [0, 1] and int64 labels.

    Raises:
        FileNotFoundError: If `path` (or `$KERAS_LOTTERY_MNIST`) names no file.
        ValueError: If the file is not an npz, lacks a key, or has arrays of
            the wrong shapes; or for a bad `validation`.
        RuntimeError: If no path is given and Keras cannot download MNIST.

    Example:

    >>> from keras_lottery.apps.data import load_mnist
    >>> data = load_mnist("../shared/data/mnist.npz")  # doctest: +SKIP
    >>> data.x_train.shape, data.x_val.shape, data.x_test.shape  # doctest: +SKIP
    ((55000, 784), (5000, 784), (10000, 784))
    """
    chosen = Path(path) if path is not None else default_mnist_path()
    if chosen is not None:
        arrays = _read_npz(chosen)
        source = str(chosen)
    else:
        try:
            import keras

            (xt, yt), (xs, ys) = keras.datasets.mnist.load_data()
        except Exception as error:  # offline, hash mismatch, ...
            raise RuntimeError(
                "No MNIST path was given and $KERAS_LOTTERY_MNIST is unset, "
                "so keras.datasets.mnist.load_data() was tried, and it failed "
                f"({type(error).__name__}: {error}). It needs the internet or "
                "a cached copy. Pass path=... (or --data PATH) or set "
                f"${MNIST_ENV} to an mnist.npz in Keras layout (x_train, "
                "y_train, x_test, y_test)."
            ) from error
        arrays = {"x_train": xt, "y_train": yt, "x_test": xs, "y_test": ys}
        source = "keras.datasets.mnist"
    _check_mnist(arrays, source)

    def prepare(x):
        x = np.asarray(x, dtype=np.float32) / 255.0
        return x.reshape(len(x), -1) if flatten else x

    x_train, y_train, x_val, y_val = _split(
        prepare(arrays["x_train"]),
        np.asarray(arrays["y_train"], dtype=np.int64),
        validation,
        source,
    )
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=prepare(arrays["x_test"]),
        y_test=np.asarray(arrays["y_test"], dtype=np.int64),
        name="mnist",
        source=source,
    )


def load_mnist1d(
    seed: int = 42, *, num_samples: int = 5000, validation: int = 0
) -> Dataset:
    """Generates MNIST-1D locally (no download) with the `mnist1d` package.

    With the defaults this is the data set of the MNIST-1D paper and its
    notebooks (`make_dataset(get_dataset_args())`, seed 42): 4,000 training
    and 1,000 test sequences of 40 floats, 10 classes. The notebooks have
    no validation split; pass `validation=n` to hold out the last `n`
    training sequences (e.g. to early-stop). The
    global NumPy and `random` states, which `mnist1d` reseeds, are restored
    afterwards.

    Args:
        seed: The generator's seed (42 is the published data set).
        num_samples: Total number of sequences (80% train, 20% test).
        validation: Training sequences held out for validation; 0 for none.

    Returns:
        A `Dataset` with float32 inputs of shape (40,) and int64 labels.

    Raises:
        ImportError: If `mnist1d` is not installed.

    Example:

    >>> from keras_lottery.apps.data import load_mnist1d
    >>> data = load_mnist1d()
    >>> data.x_train.shape, data.x_val.shape, data.x_test.shape
    ((4000, 40), (0, 40), (1000, 40))
    >>> load_mnist1d(validation=500).x_train.shape
    (3500, 40)
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        raise ImportError(
            "load_mnist1d needs the `mnist1d` package, which generates the "
            "data locally. Install it with `pip install mnist1d` (or the "
            "`data` extra: pip install 'keras-lottery[data]')."
        ) from error
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or (
        num_samples < 20
    ):
        raise ValueError(
            "`num_samples` must be an int >= 20 (two per class per split). "
            f"Received: num_samples={num_samples!r}"
        )
    args = get_dataset_args()
    args.seed = int(seed)
    args.num_samples = num_samples
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x_train, y_train, x_val, y_val = _split(
        np.asarray(raw["x"], dtype=np.float32),
        np.asarray(raw["y"], dtype=np.int64),
        validation,
        "MNIST-1D",
    )
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=np.asarray(raw["x_test"], dtype=np.float32),
        y_test=np.asarray(raw["y_test"], dtype=np.int64),
        name="mnist1d",
        source=f"mnist1d.make_dataset (generated locally, seed {seed})",
    )


class _IterationBatches(keras.utils.PyDataset):
    """`steps` batches cycling through (x, y), reshuffled on every pass."""

    def __init__(self, x, y, batch_size, steps, shuffle, seed):
        super().__init__()
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.steps = steps
        self.shuffle = shuffle
        self.per_pass = len(x) // batch_size
        passes = -(-steps // self.per_pass)
        rng = np.random.default_rng(
            np.random.randint(2**31 - 1) if seed is None else seed
        )
        self.orders = [
            rng.permutation(len(x)) if shuffle else np.arange(len(x))
            for _ in range(passes)
        ]

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        order = self.orders[index // self.per_pass]
        start = (index % self.per_pass) * self.batch_size
        picked = order[start:start + self.batch_size]
        return self.x[picked], self.y[picked]


def iteration_batches(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    steps: int,
    shuffle: bool = True,
    seed: int | None = None,
) -> keras.utils.PyDataset:
    """Exactly `steps` training batches, cycling through the data.

    The lottery-ticket papers count training in iterations (Frankle &
    Carbin: 50,000 at batch 60), and evaluate every few hundred. Keras'
    `fit` on arrays stops when one pass over the data ends, whatever
    `steps_per_epoch` says; this `PyDataset` makes as many passes as
    needed, each in a new random order (a partial last batch of a pass is
    dropped). Train with `fit(batches, epochs=steps // k, steps_per_epoch=k)`
    to run `steps` iterations with `validation_data` evaluated every `k`.

    Args:
        x: Inputs, first axis the examples.
        y: Labels, one per example.
        batch_size: Examples per batch, at most `len(x)`.
        steps: Number of batches (training iterations) in all.
        shuffle: Reshuffle on every pass; False keeps the data order (as
            the MNIST-1D notebooks do).
        seed: Seed of the shuffling; None draws one from NumPy's global
            generator (which `keras.utils.set_random_seed` seeds).

    Returns:
        A `keras.utils.PyDataset` of length `steps`.

    Example:

    >>> import numpy as np
    >>> from keras_lottery.apps.data import iteration_batches
    >>> x, y = np.arange(10.0)[:, None], np.arange(10)
    >>> batches = iteration_batches(x, y, batch_size=4, steps=5, shuffle=False)
    >>> len(batches), [int(b[1][0]) for b in (batches[i] for i in range(5))]
    (5, [0, 4, 0, 4, 0])
    """
    for name, value in (("batch_size", batch_size), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be an int >= 1. Received: {name}={value!r}"
            )
    if len(x) != len(y):
        raise ValueError(
            "`x` and `y` must hold the same number of examples. Received: "
            f"len(x)={len(x)}, len(y)={len(y)}."
        )
    if batch_size > len(x):
        raise ValueError(
            f"`batch_size` ({batch_size}) is larger than the data "
            f"({len(x)} examples). Use a smaller batch."
        )
    return _IterationBatches(x, y, batch_size, steps, shuffle, seed)
