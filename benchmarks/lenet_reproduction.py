"""Reproduces Frankle & Carbin's LeNet-300-100 lottery-ticket experiment.

"The Lottery Ticket Hypothesis" (ICLR 2019), Section 2 and Figures 3-4:
a 784-300-100-10 ReLU network, Glorot-normal initialization, Adam at
1.2e-3, batch 60, 50,000 iterations per round, MNIST with 55,000 training
and 5,000 validation images. Each round prunes 20% of the remaining
weights of each hidden layer and 10% of the output layer, by magnitude,
and resets the survivors to their initial values; the control re-trains
the same masks from a fresh random initialization. The validation loss is
evaluated every 100 iterations; the early-stop iteration is the one with
the minimum validation loss, and the test accuracy is read there (and at
the end of training).

Usage:

    python benchmarks/lenet_reproduction.py --backend jax --seeds 0 \\
        --iterations 50000 --rounds 18 --control-rounds 3 7 12 15 18 \\
        [--data PATH]

writes benchmarks/results/lenet_<backend>_<iterations>it_s<seeds>.json and
docs/img/lenet_<backend>_<iterations>it_s<seeds>.png (accuracy) and
docs/img/lenet_<backend>_<iterations>it_s<seeds>_early_stop.png. Every
finished round is also saved under benchmarks/results/tmp/ (git-ignored),
so an interrupted run resumes where it stopped, and `--collect` writes the
JSON and plots of the rounds finished so far without training. `--compare`
prints the paper's sparsities side by side for several result files.

MNIST comes from --data, else $KERAS_LOTTERY_MNIST (an mnist.npz in Keras
layout; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _reproduction as rep

LABELS = {"ticket": "winning ticket (reset to init)", "reinit": "random re-init"}
SHORT = {"ticket": "ticket", "reinit": "reinit"}
CONTROLS = ["reinit"]
# Frankle & Carbin's Figures 3-4 report these rounds (% of weights remaining).
PAPER_ROUNDS = {0: 100.0, 3: 51.3, 7: 21.1, 12: 7.0, 15: 3.6, 18: 1.9}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", choices=rep.BACKENDS, default=None,
                        help="Keras backend (default: $KERAS_BACKEND, else jax)")
    parser.add_argument("--data", type=Path, default=None,
                        help="mnist.npz (default: $KERAS_LOTTERY_MNIST)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iterations", type=int, default=50_000,
                        help="training iterations per round (paper: 50000)")
    parser.add_argument("--eval-every", type=int, default=100,
                        help="iterations between validation evaluations")
    parser.add_argument("--rounds", type=int, default=20,
                        help="pruning rounds (20: 1.2%% of weights remaining)")
    parser.add_argument("--control-rounds", type=int, nargs="+", default=None,
                        help="train the re-init control only in these rounds "
                        "(default: every round; the paper reports rounds "
                        "3 7 12 15 18: 51.3, 21.1, 7.0, 3.6, 1.9%% remaining)")
    parser.add_argument("--collect", action="store_true",
                        help="only gather the finished rounds into JSON/plots")
    parser.add_argument("--compare", type=Path, nargs="+", default=None,
                        metavar="JSON",
                        help="print the paper's sparsities side by side for "
                        "these result files (e.g. one per backend) and exit")
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds of 300 iterations on 6,000 images")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.iterations, args.seeds = 2, 300, args.seeds[:1]
    if args.iterations % args.eval_every:
        parser.error("--iterations must be a multiple of --eval-every")
    return args


def tag(args) -> str:
    """Names a run's files by iterations and seeds, so runs never overwrite."""
    its = (f"{args.iterations // 1000}k" if args.iterations % 1000 == 0
           else str(args.iterations))
    return f"{its}it_s{'-'.join(map(str, args.seeds))}"


def build_model():
    import keras

    init = keras.initializers.GlorotNormal()
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(300, "relu", kernel_initializer=init, name="fc1"),
            keras.layers.Dense(100, "relu", kernel_initializer=init, name="fc2"),
            keras.layers.Dense(10, kernel_initializer=init, name="output"),
        ],
        name="lenet_300_100",
    )


def make_fit_fn(args, data):
    import keras_lottery as kl
    from keras_lottery.apps.data import iteration_batches

    def fit_fn(model):
        batches = iteration_batches(
            data.x_train, data.y_train, batch_size=60, steps=args.iterations
        )
        # Test accuracy at each new minimum of the validation loss (the
        # early stop so far) and at the end: the numbers an evaluation every
        # 100 iterations would give, at a fraction of the cost.
        readout = kl.EarlyStopReadout(
            (data.x_test, data.y_test), steps_per_epoch=args.eval_every,
            batch_size=2000,
        )
        history = model.fit(
            batches,
            epochs=args.iterations // args.eval_every,
            steps_per_epoch=args.eval_every,
            validation_data=(data.x_val, data.y_val),
            validation_batch_size=2000,
            callbacks=[readout],
            verbose=0,
        ).history
        best = readout.early_stop // args.eval_every - 1  # its epoch
        return {
            "loss": history["loss"][-1],
            "accuracy": history["accuracy"][-1],
            "val_loss": history["val_loss"][-1],
            "val_accuracy": history["val_accuracy"][-1],
            "test_accuracy": readout.final["accuracy"],
            "test_accuracy_at_early_stop": readout.at_early_stop["accuracy"],
            "val_accuracy_at_early_stop": history["val_accuracy"][best],
            "early_stop": readout.early_stop,  # in iterations
        }

    return fit_fn


def search_dir(args, backend: str, seed: int) -> Path:
    its = tag(args).split("_s")[0]
    controls = ("_c" + "-".join(map(str, sorted(set(args.control_rounds))))
                if args.control_rounds else "")
    return (rep.RESULTS / "tmp"
            / f"lenet_{backend}_{its}_{args.rounds}r{controls}_seed{seed}")


def run_seed(args, seed: int, data, backend: str, collect: bool) -> dict | None:
    import keras

    import keras_lottery as kl

    directory = search_dir(args, backend, seed)
    if collect:
        if not (directory / "search.json").is_file():
            return None
        result = kl.SearchResult.load(directory)
    else:
        keras.utils.set_random_seed(seed)
        model = kl.wrap(build_model())
        model.compile(
            keras.optimizers.Adam(1.2e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            # One compiled call per evaluation interval (not on torch, whose
            # trainer steps one batch per call), XLA on TensorFlow
            # (measured: 8.1 -> 3.7 ms per iteration), torch.compile on
            # PyTorch (this fit_fn, one thread: 12.0 -> 7.9 ms per
            # iteration after about 45 s of compiling); JAX compiles anyway.
            steps_per_execution=1 if backend == "torch" else args.eval_every,
            jit_compile=True if backend in ("tensorflow", "torch") else "auto",
        )
        result = kl.lottery_search(
            model,
            make_fit_fn(args, data),
            rounds=args.rounds,
            rate=0.2,
            output_rate=0.1,
            scope="layer",
            rewind_to="init",
            control="reinit",
            control_rounds=args.control_rounds,
            directory=directory,
            seed=seed,
            verbose=1,
        )
    return {"seed": seed, "directory": str(directory.relative_to(rep.ROOT)),
            **result.to_dict()}


def compare_table(reports: list[dict], metric: str) -> str:
    """The paper's rounds as rows, one column group per result file.

    Each group holds the ticket and the re-init control (mean ± std over the
    file's seeds where it has several) and their early-stop iterations
    (mean). A round a run has not reached, or a control it did not train
    there, is shown as "-".
    """

    def count(value):
        return "-" if math.isnan(value) else f"{value:,.0f}"

    header, groups = ["% remaining (paper)"], []
    for report in reports:
        runs = report["runs"]
        name = (f"{report['environment']['backend']}, "
                f"{len(runs)} seed{'s' if len(runs) > 1 else ''}")
        header += [f"{name}: ticket", "re-init", "stop (ticket)", "stop (re-init)"]
        groups.append((len(runs), rep.series(runs, metric),
                       rep.series(runs, metric, "reinit"),
                       rep.early_stops(runs), rep.early_stops(runs, "reinit")))
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" for _ in header) + "|"]
    for rnd, paper in PAPER_ROUNDS.items():
        row = [f"{paper:g}"]
        for seeds, ticket, reinit, stops, reinit_stops in groups:
            if rnd >= len(ticket):
                row += ["-"] * 4
                continue
            row += [rep.percent_cell(ticket[rnd], seeds),
                    rep.percent_cell(reinit[rnd], seeds) if rnd else "-",
                    count(stops[rnd]),
                    count(reinit_stops[rnd]) if rnd else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def report_run(report: dict, args) -> list[Path]:
    runs = report["runs"]
    backend = report["environment"]["backend"]
    for metric in ("test_accuracy_at_early_stop", "test_accuracy"):
        print(f"\n{metric} (%), seeds {[r['seed'] for r in runs]}:")
        print(rep.markdown_table(runs, metric=metric, controls=CONTROLS,
                                 labels=SHORT))
    its = report["settings"]["iterations_per_round"]
    images = rep.RESULTS / "tmp" if args.quick else rep.IMAGES
    stem = images / f"lenet_{backend}_{tag(args)}"
    accuracy = rep.plot(
        runs, stem.with_suffix(".png"), metric="test_accuracy_at_early_stop",
        controls=CONTROLS, labels=LABELS,
        title=f"LeNet-300-100 on MNIST, {its:,} iterations per round, {backend}",
        ylabel="test accuracy at early stop (%)",
    )
    stop = rep.plot_early_stop(
        runs, stem.with_name(stem.name + "_early_stop.png"), controls=CONTROLS,
        labels=LABELS,
        title=f"LeNet-300-100, early-stop iteration (max {its:,}), {backend}",
    )
    return [accuracy, stop]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compare:
        reports = [json.loads(path.read_text(encoding="utf-8"))
                   for path in args.compare]
        for metric in ("test_accuracy_at_early_stop", "test_accuracy"):
            print(f"\n{metric} (%) and early-stop iteration:")
            print(compare_table(reports, metric))
        return 0
    backend = rep.use_backend(args.backend)
    from keras_lottery.apps.data import load_mnist

    data = load_mnist(args.data)
    if args.quick:
        data = data.subset(train=6000, test=2000)
    print(f"Data: {data.describe()}", flush=True)
    output = rep.RESULTS / f"lenet_{backend}_{tag(args)}.json"
    if args.quick:
        output = rep.RESULTS / "tmp" / output.name
    report = {
        "benchmark": "lenet_300_100_lottery",
        "environment": rep.environment(),
        "settings": {
            "model": "784-300-100-10, ReLU, Glorot normal",
            "optimizer": "Adam(1.2e-3)",
            "batch_size": 60,
            "iterations_per_round": args.iterations,
            "eval_every": args.eval_every,
            "rounds": args.rounds,
            "rate": 0.2,
            "output_rate": 0.1,
            "scope": "layer",
            "rewind_to": "init",
            "control": "reinit",
            "control_rounds": args.control_rounds,
            "seeds": args.seeds,
            "data": data.describe(),
            "quick": args.quick,
        },
        "runs": [],
    }
    if args.collect and output.is_file():  # keep the command of the real run
        previous = json.loads(output.read_text(encoding="utf-8"))
        report["environment"] = previous["environment"]
        report["collected"] = rep.environment()["date"]
    elif not args.collect:
        rep.write_json(output, report)  # the command, for a later --collect
    began = time.perf_counter()
    for seed in args.seeds:
        print(f"=== seed {seed} ({backend}) ===", flush=True)
        run = run_seed(args, seed, data, backend, args.collect)
        if run is not None:
            report["runs"].append(run)
        if args.collect:  # training time: the rounds' own wall times
            report["seconds"] = sum(
                r["seconds"] for run in report["runs"] for r in run["rounds"]
            )
        else:
            report["seconds"] = time.perf_counter() - began
        rep.write_json(output, report)
    if not report["runs"]:
        print("No finished rounds to report.")
        return 1
    paths = report_run(report, args)
    print(f"Wrote {output} and {', '.join(map(str, paths))}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
