"""Reproduces the lottery-ticket experiment of the MNIST-1D paper's notebook.

Greydanus & Kobak, "Scaling down deep learning with MNIST-1D" (ICML 2024),
notebook `5. lottery_tickets.ipynb`: an MLP 40-500-500-10 with a residual
second layer (h = h + relu(W2 h)), PyTorch's default initialization, Adam
at 2e-2, batch 100 taken in data order, 1,500 iterations per round, the
test set evaluated every 100 iterations. Every layer is pruned by magnitude
at the same rate, survivors reset to their initial values; random pruning
(a random mask of the same per-layer sparsity) is the control. We also run
Frankle & Carbin's random re-initialization control.

Differences from the notebook, on purpose: it raised sparsity by 1% of all
weights per retrain over 100 retrains; we prune 20% of the remaining
weights per round (`lottery_search`), which reaches the same sparsities in
about a tenth of the rounds. It pruned biases too; we prune kernels only.
It downloads its data; we generate it with `mnist1d` (same generator and
seed 42).

Usage:

    python benchmarks/mnist1d_reproduction.py --backend jax --seeds 0 1 2

writes benchmarks/results/mnist1d_<backend>.json (every round of every
seed, with the command, backend and date) and docs/img/mnist1d_lottery.png.
`--quick` runs a tiny version (for smoke tests; results not meaningful).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _reproduction as rep

LABELS = {
    "ticket": "lottery ticket (reset to init)",
    "random_prune": "random pruning",
    "reinit": "random re-init",
}
SHORT = {"ticket": "ticket", "random_prune": "random prune", "reinit": "reinit"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", choices=rep.BACKENDS, default=None,
                        help="Keras backend (default: $KERAS_BACKEND, else jax)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=16,
                        help="pruning rounds (default 16: 2.8%% remaining)")
    parser.add_argument("--rate", type=float, default=0.2,
                        help="fraction of remaining weights pruned per round")
    parser.add_argument("--steps", type=int, default=1500,
                        help="training iterations per round (notebook: 1501)")
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON path (default benchmarks/results/"
                        "mnist1d_<backend>.json)")
    parser.add_argument("--plot", type=Path, default=rep.IMAGES / "mnist1d_lottery.png")
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds, 200 steps, 1 seed: a smoke test")
    parser.add_argument("--from-json", type=Path, default=None, metavar="PATH",
                        help="redraw the table and plot of a finished run "
                        "without training")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.seeds = 2, 200, args.seeds[:1]
    return args


def build_model(hidden: int):
    """The notebook's SparseMLP: 40-h-h-10, residual second layer."""
    import keras

    def dense(units, fan_in, activation=None):
        # torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        bound = fan_in ** -0.5
        return keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=keras.initializers.VarianceScaling(
                1 / 3, "fan_in", "uniform"
            ),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound),
        )

    inputs = keras.Input((40,))
    h = dense(hidden, 40, "relu")(inputs)
    h = keras.layers.Add()([h, dense(hidden, hidden, "relu")(h)])
    outputs = dense(10, hidden)(h)
    return keras.Model(inputs, outputs, name="mnist1d_mlp")


def run_seed(args, seed: int, data) -> dict:
    import keras

    import keras_lottery as kl
    from keras_lottery.apps.data import iteration_batches

    eval_every = min(100, args.steps)

    def fit_fn(model):
        batches = iteration_batches(
            data.x_train, data.y_train, batch_size=100, steps=args.steps,
            shuffle=False,  # the notebook takes batches in data order
        )
        history = model.fit(
            batches,
            epochs=args.steps // eval_every,
            steps_per_epoch=eval_every,
            validation_data=(data.x_test, data.y_test),
            verbose=0,
        ).history
        test_loss = history["val_loss"]
        best = min(range(len(test_loss)), key=test_loss.__getitem__)
        return {
            "loss": history["loss"][-1],
            "accuracy": history["accuracy"][-1],
            "test_loss": test_loss[-1],
            "test_accuracy": history["val_accuracy"][-1],  # the notebook's last_acc
            "test_accuracy_max": max(history["val_accuracy"]),  # its max_acc
            "early_stop": (best + 1) * eval_every,  # iteration of min test loss
        }

    keras.utils.set_random_seed(seed)
    model = kl.wrap(build_model(args.hidden))
    model.compile(
        keras.optimizers.Adam(2e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    result = kl.lottery_search(
        model,
        fit_fn,
        rounds=args.rounds,
        rate=args.rate,
        output_rate=args.rate,  # the notebook prunes every layer alike
        scope="layer",
        rewind_to="init",
        control=["random_prune", "reinit"],
        seed=seed,
        verbose=1,
    )
    return {"seed": seed, **result.to_dict()}


def report_run(report: dict, plot_path: Path) -> None:
    """Prints the Markdown table and draws the plot of a finished run."""
    runs, backend = report["runs"], report["environment"]["backend"]
    controls = ["random_prune", "reinit"]
    for metric in ("test_accuracy", "test_accuracy_max"):
        print(f"\n{metric} (%), mean ± std over seeds {report['settings']['seeds']}:")
        print(rep.markdown_table(runs, metric=metric, controls=controls,
                                 labels=SHORT))
    rep.plot(
        runs, plot_path, metric="test_accuracy", controls=controls,
        labels=LABELS, title=f"MNIST-1D MLP, {backend}",
        ylabel="test accuracy (%), end of training",
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        import json

        report_run(json.loads(args.from_json.read_text()), args.plot)
        print(f"Wrote {args.plot}.")
        return 0
    backend = rep.use_backend(args.backend)
    from keras_lottery.apps.data import load_mnist1d

    data = load_mnist1d(seed=42)
    print(f"Data: {data.describe()}")
    output = args.output or rep.RESULTS / f"mnist1d_{backend}.json"
    report = {
        "benchmark": "mnist1d_lottery",
        "environment": rep.environment(),
        "settings": {
            "model": f"40-{args.hidden}-{args.hidden}(residual)-10",
            "optimizer": "Adam(2e-2)",
            "batch_size": 100,
            "steps_per_round": args.steps,
            "eval_every": min(100, args.steps),
            "rounds": args.rounds,
            "rate": args.rate,
            "output_rate": args.rate,
            "scope": "layer",
            "seeds": args.seeds,
            "data": data.describe(),
            "quick": args.quick,
        },
        "runs": [],
    }
    began = time.perf_counter()
    for seed in args.seeds:
        print(f"=== seed {seed} ({backend}) ===", flush=True)
        report["runs"].append(run_seed(args, seed, data))
        report["seconds"] = time.perf_counter() - began
        rep.write_json(output, report)  # after every seed: partial results
    report_run(report, args.plot)
    print(f"Wrote {output} and {args.plot} in {time.perf_counter() - began:.0f}s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
