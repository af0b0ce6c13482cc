"""Lottery tickets on MNIST-1D, after the MNIST-1D paper's notebook.

Greydanus & Kobak, "Scaling down deep learning with MNIST-1D" (2024),
notebook "lottery tickets": an MLP 40-h-h-10 whose second layer is
residual (h = h + relu(W2 h)), trained with Adam at 2e-2 on batches of 100
taken in data order; rounds of magnitude pruning (every layer at the same
rate) with the survivors reset to their initial values. The control is
random pruning: a random mask of the same per-layer sparsity, from the same
initial weights (`control="random_prune"`).

The data is generated locally by the `mnist1d` package (4,000 train / 1,000
test sequences of 40 values); nothing is downloaded. The default is a quick
look (h=100, 3 rounds of 300 iterations, under a minute); `--full` is the
notebook's setting (h=500, 1,500 iterations per round) for 16 rounds, down
to 2.8% of the weights.

    KERAS_BACKEND=jax python examples/mnist1d_lottery.py
    KERAS_BACKEND=jax python examples/mnist1d_lottery.py --full --plot m1d.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--full", action="store_true",
                        help="the notebook's model and training, 16 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None,
                        help="write the accuracy-vs-sparsity plot here (.png)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 16 if args.full else 3
    return args


def build_model(hidden: int):
    """The notebook's MLP, with PyTorch's default initialization."""
    import keras

    def dense(units, fan_in, activation=None):
        bound = fan_in ** -0.5  # torch.nn.Linear: U(-1/sqrt(fan_in), ...)
        return keras.layers.Dense(
            units, activation,
            kernel_initializer=keras.initializers.VarianceScaling(
                1 / 3, "fan_in", "uniform"),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound),
        )

    inputs = keras.Input((40,))
    h = dense(hidden, 40, "relu")(inputs)
    h = keras.layers.Add()([h, dense(hidden, hidden, "relu")(h)])
    return keras.Model(inputs, dense(10, hidden)(h), name="mnist1d_mlp")


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    import keras_lottery as kl
    from keras_lottery.apps.data import iteration_batches, load_mnist1d

    hidden, steps = (500, 1500) if args.full else (100, 300)
    data = load_mnist1d(seed=42)
    print(f"Data: {data.describe()}")

    keras.utils.set_random_seed(args.seed)
    model = kl.wrap(build_model(hidden))
    model.compile(
        keras.optimizers.Adam(2e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    def fit_fn(m):
        return m.fit(
            iteration_batches(data.x_train, data.y_train, batch_size=100,
                              steps=steps, shuffle=False),
            epochs=1, verbose=0,
        )

    def eval_fn(m):
        return m.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)

    result = kl.lottery_search(
        model, fit_fn, eval_fn=eval_fn, rounds=args.rounds, rate=0.2,
        output_rate=0.2, rewind_to="init", control="random_prune",
        seed=args.seed,
    )
    print()
    print(result.table())
    best = result.best_ticket()
    print(f"Sparsest round at or above dense test accuracy: round {best.round}, "
          f"{100 * best.remaining:.1f}% of weights, "
          f"{100 * best.metrics['test_accuracy']:.1f}% "
          f"(dense {100 * result[0].metrics['test_accuracy']:.1f}%).")
    if args.plot:
        result.plot(args.plot, "test_accuracy", title="MNIST-1D MLP")
        print(f"Plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
