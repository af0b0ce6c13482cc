"""`keras-lottery demo`: a lottery-ticket search from start to finish.

Runs, on MNIST-1D (generated locally) or real MNIST:

1. an MLP, wrapped with `keras_lottery.wrap`;
2. `lottery_search`: train, prune 20% of the remaining weights by
   magnitude (the output layer at 10%), rewind the survivors to their
   initial values, repeat; each round also retrains the same mask from a
   fresh random initialization (Frankle & Carbin's control);
3. the round table, and the accuracy-vs-sparsity plot (PNG);
4. the winning ticket (the sparsest round within half a point of the dense
   accuracy) saved as `.keras`, stripped, and exported to a sparse-encoded
   `.tflite`, with its size and latency beside the dense network's export.

Usage::

    python -m keras_lottery.apps.demo [--dataset mnist1d|mnist] [--data PATH]
        [--rounds N] [--backend jax|tensorflow|torch] [--output DIR] [--quick]

The default run (MNIST-1D, JAX) takes a few minutes on a laptop CPU;
`--quick` (two rounds, few steps) checks the whole pipeline in under a
minute. Everything is written under `--output` (default `demo_output/`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BACKENDS = ("jax", "tensorflow", "torch")
DATASETS = ("mnist1d", "mnist")
_REEXEC_FLAG = "KERAS_LOTTERY_DEMO_REEXEC"

#: Per data set: model, batch, training steps per round, learning rate, rounds.
_SETTINGS = {
    "mnist1d": {"hidden": (256, 256), "batch_size": 100, "steps": 1000,
                "lr": 5e-3, "rounds": 12},
    "mnist": {"hidden": (300, 100), "batch_size": 60, "steps": 1500,
              "lr": 1.2e-3, "rounds": 6},
}
_QUICK = {"hidden": (64, 32), "steps": 60, "rounds": 2, "train": 2000,
          "test": 500}


class DemoError(RuntimeError):
    """A problem with the demo's inputs (e.g. no MNIST file), not a bug."""


@dataclasses.dataclass(frozen=True)
class DemoFiles:
    """Paths the demo wrote."""

    plot: Path
    table: Path
    results: Path
    ticket_keras: Path
    ticket_tflite: Path
    dense_tflite: Path
    summary: Path

    @classmethod
    def under(cls, output: Path) -> DemoFiles:
        """The demo's files in the directory `output`."""
        return cls(
            plot=output / "accuracy_vs_sparsity.png",
            table=output / "rounds.csv",
            results=output / "search.json",
            ticket_keras=output / "winning_ticket.keras",
            ticket_tflite=output / "winning_ticket.tflite",
            dense_tflite=output / "dense.tflite",
            summary=output / "summary.json",
        )


DESCRIPTION = (
            "Find a lottery ticket in an MLP end to end: search, table, "
            "plot, winning ticket as .keras and sparse .tflite."
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the demo's options to `parser` (shared with `keras-lottery demo`)."""
    parser.add_argument("--dataset", choices=DATASETS, default="mnist1d",
                        help="mnist1d (generated locally, default) or mnist")
    parser.add_argument("--data", type=Path, default=None, metavar="PATH",
                        help="mnist.npz in Keras layout for --dataset mnist "
                        "(default: $KERAS_LOTTERY_MNIST)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="pruning rounds (default: 12 for mnist1d, 6 for "
                        "mnist; 2 with --quick)")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="Keras backend (default: $KERAS_BACKEND, else jax)")
    parser.add_argument("--output", type=Path, default=Path("demo_output"),
                        metavar="DIR", help="where to write (default demo_output/)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--quick", action="store_true",
                        help="two rounds, few steps, small model: a smoke test")


def build_parser() -> argparse.ArgumentParser:
    """The demo's command-line parser."""
    parser = argparse.ArgumentParser(prog="keras-lottery demo", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def _check_args(parser, args) -> None:
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be at least 1. Received: {args.rounds}")
    if args.data is not None and args.dataset != "mnist":
        parser.error("--data is the path of an mnist.npz; use it with "
                     "--dataset mnist.")


def select_backend(requested: str | None, argv: Sequence[str]) -> str:
    """Makes sure Keras runs on the wanted backend; may re-execute.

    Keras reads KERAS_BACKEND once, when imported, so switching means
    starting again: the process is replaced by
    `python -m keras_lottery.apps.demo <argv>` with KERAS_BACKEND set.

    Args:
        requested: `--backend`, or None for $KERAS_BACKEND, else "jax".
        argv: The demo's arguments, passed on when re-executing.

    Returns:
        The backend in use (only when no re-execution was needed).
    """
    wanted = requested or os.environ.get("KERAS_BACKEND") or "jax"
    import keras

    current = keras.backend.backend()
    if current == wanted:
        return current
    if os.environ.get(_REEXEC_FLAG):
        raise RuntimeError(
            f"Re-executed with KERAS_BACKEND={wanted}, but Keras still runs "
            f"on {current}. Check ~/.keras/keras.json and the environment."
        )
    env = {**os.environ, "KERAS_BACKEND": wanted, _REEXEC_FLAG: "1"}
    print(f"Restarting on the {wanted} backend (Keras is on {current}).",
          flush=True)
    sys.stdout.flush()
    os.execve(
        sys.executable,
        [sys.executable, "-m", "keras_lottery.apps.demo", *argv],
        env,
    )
    raise AssertionError("unreachable")  # pragma: no cover


def load_data(dataset: str, path: Path | None, quick: bool):
    """The demo's data: MNIST-1D generated here, or MNIST from a file."""
    from keras_lottery.apps.data import load_mnist, load_mnist1d

    data = load_mnist1d(seed=42) if dataset == "mnist1d" else load_mnist(path)
    if quick:
        data = data.subset(train=_QUICK["train"], test=_QUICK["test"])
    return data


def build_mlp(input_dim: int, hidden: Sequence[int], num_classes: int = 10):
    """A ReLU MLP with Glorot-normal kernels, as in Frankle & Carbin."""
    import keras

    init = keras.initializers.GlorotNormal()
    layers = [keras.Input((input_dim,))]
    for i, units in enumerate(hidden):
        layers.append(keras.layers.Dense(units, "relu", kernel_initializer=init,
                                         name=f"hidden{i + 1}"))
    layers.append(keras.layers.Dense(num_classes, kernel_initializer=init,
                                     name="output"))
    return keras.Sequential(layers, name="mlp")


def run_search(data, *, rounds: int, settings: dict, seed: int, verbose: int = 1):
    """Wraps an MLP and runs `lottery_search` with the re-init control."""
    import keras

    import keras_lottery as kl
    from keras_lottery.apps.data import iteration_batches

    keras.utils.set_random_seed(seed)
    model = kl.wrap(build_mlp(data.input_shape[0], settings["hidden"]))
    model.compile(
        keras.optimizers.Adam(settings["lr"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    def fit_fn(m):
        batches = iteration_batches(
            data.x_train, data.y_train,
            batch_size=min(settings["batch_size"], len(data.x_train)),
            steps=settings["steps"],
        )
        return m.fit(batches, epochs=1, verbose=0)

    def eval_fn(m):
        return m.evaluate(data.x_test, data.y_test, batch_size=1000,
                          verbose=0, return_dict=True)

    return kl.lottery_search(
        model, fit_fn, eval_fn=eval_fn, rounds=rounds, rate=0.2,
        control="reinit", seed=seed, verbose=verbose,
    )


def export_ticket(ticket, dense, data, output: Path, *, quick: bool) -> dict:
    """Strips both models, exports them to .tflite, and times them.

    The ticket is exported sparse-encoded, the dense network (round 0)
    dense; the figures compare the two files.
    """
    import keras_lottery as kl
    from keras_lottery.deploy.tflite.benchmark import benchmark_tflite
    from keras_lottery.deploy.tflite.export import export_tflite

    sample = data.x_test[:8]
    ticket_path = output / "winning_ticket.tflite"
    dense_path = output / "dense.tflite"
    ticket_report = export_tflite(kl.strip(ticket), ticket_path,
                                  representative_data=sample)
    dense_report = export_tflite(kl.strip(dense), dense_path, sparse=False,
                                 representative_data=sample)
    runs = 10 if quick else 200
    latency = {}
    for name, path in (("ticket", ticket_path), ("dense", dense_path)):
        rows = benchmark_tflite(path, batch_sizes=(1,), threads=1, runs=runs)
        latency[name] = {"xnnpack_ms": rows[0].xnnpack_ms,
                         "builtin_ms": rows[0].builtin_ms}
    return {
        "ticket_tflite": str(ticket_path),
        "dense_tflite": str(dense_path),
        "ticket_bytes": ticket_report.file_bytes,
        "dense_bytes": dense_report.file_bytes,
        "ticket_sparse_encoding": ticket_report.sparse,
        "latency_batch1": latency,
        "latency_runs": runs,
        "notes": list(ticket_report.notes),
        "ticket_report": str(ticket_report),
    }


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.3f} ms"


def run(args) -> DemoFiles:
    """Runs the demo for parsed arguments on the current backend."""
    import keras

    import keras_lottery as kl

    began = time.perf_counter()
    backend = keras.backend.backend()
    settings = dict(_SETTINGS[args.dataset])
    if args.quick:
        settings.update(hidden=_QUICK["hidden"], steps=_QUICK["steps"])
    rounds = args.rounds or (_QUICK["rounds"] if args.quick else settings["rounds"])
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)

    try:
        data = load_data(args.dataset, args.data, args.quick)
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as error:
        raise DemoError(str(error)) from error
    print(f"keras-lottery demo on the {backend} backend (Keras {keras.__version__})")
    print(f"Data: {data.describe()}")
    sizes = "-".join(map(str, (data.input_shape[0], *settings["hidden"], 10)))
    print(f"Model: MLP {sizes}; {rounds} round(s) of {settings['steps']} "
          f"training steps at batch {settings['batch_size']}, pruning 20% of "
          "the remaining weights per round (output layer 10%), rewinding to "
          "init; control: random re-init.\n", flush=True)

    result = run_search(data, rounds=rounds, settings=settings, seed=args.seed)
    print("\n" + result.table())

    files = DemoFiles.under(output)
    result.plot(files.plot, title=f"Lottery tickets: MLP {sizes} on "
                f"{data.name} ({backend})")
    result.to_csv(files.table)
    result.to_json(files.results)

    tolerance = 0.005
    best = result.best_ticket(tolerance=tolerance)
    dense_acc = result[0].metrics["test_accuracy"]
    best_acc = best.metrics["test_accuracy"]
    ticket = result.ticket(best.round, trained=True)
    ticket.save(files.ticket_keras)
    print(
        f"\nWinning ticket: round {best.round}, {100 * best.remaining:.1f}% "
        f"of weights remaining, test accuracy {100 * best_acc:.2f}% (dense "
        f"{100 * dense_acc:.2f}%; the sparsest round within "
        f"{100 * tolerance:.1f} points of dense)."
    )
    exported = export_ticket(ticket, result.ticket(0, trained=True), data,
                             output, quick=args.quick)
    _print_export(exported)
    for note in exported["notes"]:
        print(f"Note: {note}")
    summary = {
        "backend": backend,
        "data": data.describe(),
        "model": f"MLP {sizes}",
        "rounds": rounds,
        "settings": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in settings.items()},
        "quick": bool(args.quick),
        "winning_round": best.round,
        "winning_remaining": best.remaining,
        "winning_test_accuracy": best_acc,
        "dense_test_accuracy": dense_acc,
        "tolerance": tolerance,
        "export": {k: v for k, v in exported.items() if k != "ticket_report"},
        "seconds": time.perf_counter() - began,
    }
    files.summary.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    kl.summary(ticket)
    print(f"\nDone in {summary['seconds']:.0f}s. Files in {output}/:")
    for path in dataclasses.astuple(files):
        print(f"  {path}")
    return files


def _print_export(exported: dict) -> None:
    """The sizes and latencies of the exported ticket and dense model."""
    ratio = exported["ticket_bytes"] / exported["dense_bytes"]
    lat = exported["latency_batch1"]
    print(
        f"TFLite: ticket {exported['ticket_bytes']:,} bytes "
        f"({'sparse' if exported['ticket_sparse_encoding'] else 'dense'} "
        f"encoding) vs dense {exported['dense_bytes']:,} bytes "
        f"({100 * ratio:.1f}%)."
    )
    print(
        f"Latency at batch 1 (median of {exported['latency_runs']} invokes, "
        f"1 thread): ticket {_ms(lat['ticket']['xnnpack_ms'])} with XNNPACK, "
        f"{_ms(lat['ticket']['builtin_ms'])} builtin; dense "
        f"{_ms(lat['dense']['xnnpack_ms'])} with XNNPACK, "
        f"{_ms(lat['dense']['builtin_ms'])} builtin."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m keras_lottery.apps.demo` and `keras-lottery demo`.

    Args:
        argv: Command-line arguments (without the program name); `sys.argv`
            when None.

    Returns:
        The exit status: 0 on success.

    Example:

    >>> from keras_lottery.apps.demo import main
    >>> main(["--quick", "--output", "/tmp/demo"])  # doctest: +SKIP
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    select_backend(args.backend, argv)
    try:
        run(args)
    except DemoError as error:
        print(f"keras-lottery demo: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
