"""Do IMP searches from different seeds find the same ticket? Mask overlap
across seeds at every sparsity, against random masks of the same
per-layer sparsity.

Reads saved `kl.lottery_search` directories (one per seed, same schedule),
merges them (`kl.merge_results`) and reports, per round (sparsity level):

- the seeds' overlap: the mean over every pair of seeds of the Jaccard
  overlap |A∩B| / |A∪B| of their masks (`MergedResult.seed_overlap`),
  with the pairs' min and max (`kl.mask_overlap`);
- chance: the Jaccard overlap expected of independent random masks with
  the same per-layer densities (`MaskOverlap.chance_jaccard`);
- the same two figures per layer;
- for the first layer, whose rows are the input pixels (the same in every
  seed, unlike hidden units, which any permutation leaves equivalent):
  the Jaccard overlap expected if each seed's kept weights were placed at
  random within each input pixel's row, with that seed's count per pixel
  ("pixel chance"). Seeds at that level agree on which pixels matter and
  on nothing finer.

Nothing is trained. By default it reads the IMP searches that
benchmarks/pruning_at_init.py saves (LeNet-300-100 on MNIST, seeds 0, 1
and 2, 20% per round with the output layer at 10%, rewinding to theta_0,
one epoch per round):

    python benchmarks/seed_overlap.py [--backend jax] \\
        [--directories benchmarks/results/tmp/pai_imp_jax_e1_n60000_s{0,1,2}]

writes benchmarks/results/seed_overlap_<backend>.json and
docs/img/seed_overlap_lenet.png, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _reproduction as rep

DEFAULT = "pai_imp_{backend}_e1_n60000_s{seed}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=rep.BACKENDS, default=None)
    parser.add_argument("--directories", nargs="+", default=None,
                        help="search directories, one per seed (default: "
                        "the pruning_at_init IMP searches of seeds 0, 1, 2)")
    parser.add_argument("--image", default=str(rep.IMAGES / "seed_overlap_lenet.png"))
    return parser.parse_args(argv)


def pixel_chance(a, b) -> float:
    """Expected Jaccard of two masks of the first layer (inputs x units)
    whose kept weights are placed at random within each input's row, each
    row keeping its count: E|A∩B| = sum_i a_i b_i / units."""
    import numpy as np

    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    both = float((a.sum(axis=1) * b.sum(axis=1)).sum()) / a.shape[1]
    union = float(a.sum() + b.sum()) - both
    return both / union if union else 1.0


def level(merged, r: int, results) -> dict:
    """The overlap figures of round `r` of every search (pairs of seeds)."""
    import keras_lottery as kl

    pairs = [kl.mask_overlap(a.masks(r), b.masks(r), by="order")
             for a, b in itertools.combinations(results, 2)]
    first = [pixel_chance(next(iter(a.masks(r).values())),
                          next(iter(b.masks(r).values())))
             for a, b in itertools.combinations(results, 2)]
    record = merged.rounds[r]
    layers = [row["weight"] for row in pairs[0].per_weight] if pairs else []

    def mean(values):
        return sum(values) / len(values)

    return {
        "round": record.round,
        "remaining_percent": 100 * record.remaining,
        "seeds": len(results),
        "test_accuracy": record.metrics.get("test_accuracy"),
        "jaccard": mean([p.jaccard for p in pairs]) if pairs else None,
        "jaccard_min": min(p.jaccard for p in pairs) if pairs else None,
        "jaccard_max": max(p.jaccard for p in pairs) if pairs else None,
        "chance_jaccard": mean([p.chance_jaccard for p in pairs]) if pairs else None,
        "first_layer_pixel_chance": mean(first) if first else None,
        "layers": {
            name: {
                "density": mean([p.per_weight[k]["density_a"] for p in pairs]),
                "jaccard": mean([p.per_weight[k]["jaccard"] for p in pairs]),
                "chance_jaccard": mean(
                    [p.per_weight[k]["chance_jaccard"] for p in pairs]),
            }
            for k, name in enumerate(layers)
        },
    }


def plot(rows, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_lottery.search.plot import percent_remaining_axis

    rows = [r for r in rows if r["jaccard"] is not None and r["round"] > 0]
    xs = [r["remaining_percent"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    ax = axes[0]
    ax.plot(xs, [r["jaccard"] for r in rows], "o-", color="C0", markersize=4,
            label="seeds' tickets (mean of pairs; band: min-max)")
    ax.fill_between(xs, [r["jaccard_min"] for r in rows],
                    [r["jaccard_max"] for r in rows], color="C0", alpha=0.2)
    ax.plot(xs, [r["chance_jaccard"] for r in rows], "s--", color="gray",
            markersize=3, label="random masks, same per-layer sparsity")
    ax.set_yscale("log")
    ax.set_ylabel("Jaccard overlap |A∩B| / |A∪B| (log scale)")
    ax.set_title("All weights", fontsize=10)
    ax = axes[1]
    first = next(iter(rows[0]["layers"]))
    for k, name in enumerate(rows[0]["layers"]):
        ax.plot(xs, [r["layers"][name]["jaccard"] / r["layers"][name]["chance_jaccard"]
                     for r in rows], "o-", color=f"C{k + 1}", markersize=3,
                label=f"{name} (seeds / chance)")
    ax.plot(xs, [r["layers"][first]["jaccard"] / r["first_layer_pixel_chance"]
                 for r in rows], "^--", color="C1", markersize=3,
            label=f"{first} (seeds / pixel chance)")
    ax.axhline(1.0, color="gray", linestyle=":", label="chance level")
    ax.set_ylabel("seeds' Jaccard / chance Jaccard")
    ax.set_title("Per layer, against chance", fontsize=10)
    for ax in axes:
        percent_remaining_axis(ax, xs, max_ticks=8)
        ax.set_xlabel("% of weights remaining (log scale)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def table(rows) -> str:
    names = list(rows[0]["layers"])
    lines = ["| round | % remaining | seeds' Jaccard (min-max) | chance | "
             + " | ".join(f"{n}: seeds / chance" for n in names)
             + f" | {names[0]}: pixel chance |",
             "|---:|---:|---:|---:|" + "---:|" * (len(names) + 1)]
    for r in rows:
        if r["jaccard"] is None:
            continue
        cells = [str(r["round"]), f"{r['remaining_percent']:.2f}",
                 f"{r['jaccard']:.3f} ({r['jaccard_min']:.3f}-{r['jaccard_max']:.3f})",
                 f"{r['chance_jaccard']:.3f}"]
        cells += [f"{r['layers'][n]['jaccard']:.3f} / "
                  f"{r['layers'][n]['chance_jaccard']:.3f}" for n in names]
        cells.append(f"{r['first_layer_pixel_chance']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    backend = rep.use_backend(args.backend)
    import keras_lottery as kl
    from keras_lottery.search.directory import SearchDirectory

    began = time.perf_counter()
    directories = [Path(d) for d in args.directories or [
        rep.RESULTS / "tmp" / DEFAULT.format(backend=backend, seed=s)
        for s in (0, 1, 2)]]
    missing = [str(d) for d in directories if not d.is_dir()]
    if missing:
        raise SystemExit(f"No search directory at {missing}: run "
                         "benchmarks/pruning_at_init.py --methods imp first "
                         "(see its docstring), or pass --directories.")
    results = [kl.SearchResult.load(d) for d in directories]
    merged = kl.merge_results(results)
    rounds = {len(r.rounds) for r in results}
    if len(rounds) != 1 or len(merged.rounds) != rounds.pop():
        raise SystemExit("The searches differ in schedule (rounds or "
                         "sparsity per round); compare searches of one "
                         f"schedule. Received: {[str(d) for d in directories]}")
    overlap = merged.seed_overlap()
    rows = [level(merged, r, results) for r in range(len(merged.rounds))]
    for row, value in zip(rows, overlap):  # the library's figure, checked
        if value is not None and abs(value - row["jaccard"]) > 1e-9:
            raise AssertionError(f"seed_overlap {value} != {row['jaccard']}")
    image = plot(rows, Path(args.image),
                 f"LeNet-300-100 IMP tickets of {len(results)} seeds, MNIST: "
                 "do the seeds keep the same weights?")
    searches = []
    for d in directories:
        saved = SearchDirectory(d).read_args()
        searches.append({"directory": d.name, "seed": saved.get("seed"),
                         "args": {k: v for k, v in saved.items()
                                  if isinstance(v, (int, float, str, type(None)))}})
    result = {**rep.environment(), "searches": searches, "rows": rows,
              "seconds": round(time.perf_counter() - began, 1)}
    out = rep.write_json(rep.RESULTS / f"seed_overlap_{backend}.json", result)
    print(table(rows))
    print(f"wrote {out.relative_to(rep.ROOT)} and {image.relative_to(rep.ROOT)}")
    return result


if __name__ == "__main__":
    main()
