"""keras-lottery: the Lottery Ticket Hypothesis for Keras 3.

Wrap a model, prune it by magnitude, rewind it, and ship the winning ticket,
on the TensorFlow, JAX and PyTorch backends alike.

Every public name is importable from here (`import keras_lottery as kl`).
Names are loaded when first used, so `import keras_lottery` (and the
`keras-lottery` command) does not import Keras or a backend until a name
that needs it is touched. The package's layers, lowest first, are described
in `docs/architecture.md`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module that defines it. The one list of the public API;
# the `TYPE_CHECKING` imports below repeat it for type checkers and the docs
# (a test checks the two agree).
_EXPORTS: dict[str, str] = {
    # core: wrapping, whole-model operations, rewind points
    "KerasLotteryError": "keras_lottery.errors",
    "register_prunable": "keras_lottery.core.registry",
    "prunable_weights": "keras_lottery.core.registry",
    "PrunableWrapper": "keras_lottery.core.wrapper",
    "wrap": "keras_lottery.core.wrap",
    "strip": "keras_lottery.core.copy",
    "coverage": "keras_lottery.core.summary",
    "load_model": "keras_lottery.core.saving",
    "summary": "keras_lottery.core.summary",
    "PruningSummary": "keras_lottery.core.summary",
    "WeightSummary": "keras_lottery.core.summary",
    "capture_init": "keras_lottery.core.rewind",
    "checkpoint": "keras_lottery.core.rewind",
    "rewind": "keras_lottery.core.rewind",
    "reset_optimizer": "keras_lottery.core.rewind",
    # pruning: criteria, granularity, masks, gradual pruning
    "prune": "keras_lottery.pruning.prune",
    "Group": "keras_lottery.pruning.report",
    "PruneReport": "keras_lottery.pruning.report",
    "get_masks": "keras_lottery.pruning.masks",
    "set_masks": "keras_lottery.pruning.masks",
    "shuffle_masks": "keras_lottery.pruning.masks",
    "randomize_signs": "keras_lottery.pruning.masks",
    "Criterion": "keras_lottery.pruning.scores",
    "register_criterion": "keras_lottery.pruning.scores",
    "SNIP": "keras_lottery.pruning.criteria",
    "GraSP": "keras_lottery.pruning.criteria",
    "SynFlow": "keras_lottery.pruning.criteria",
    "mask_overlap": "keras_lottery.pruning.overlap",
    "MaskOverlap": "keras_lottery.pruning.overlap",
    "Granularity": "keras_lottery.pruning.granularity",
    "BlockGranularity": "keras_lottery.pruning.granularity",
    "ChannelGranularity": "keras_lottery.pruning.granularity",
    "NMGranularity": "keras_lottery.pruning.granularity",
    "GradualPruning": "keras_lottery.pruning.gradual",
    "PruningSchedule": "keras_lottery.pruning.gradual",
    "PolynomialDecay": "keras_lottery.pruning.gradual",
    "ConstantSparsity": "keras_lottery.pruning.gradual",
    "PruningEvent": "keras_lottery.pruning.gradual",
    "prune_to_sparsity": "keras_lottery.pruning.gradual",
    # search: iterative pruning inside fit or round by round, results
    "LotterySchedule": "keras_lottery.search.schedule",
    "RewindCheckpoint": "keras_lottery.search.schedule",
    "EarlyStopReadout": "keras_lottery.search.schedule",
    "lottery_search": "keras_lottery.search.lottery",
    "SearchError": "keras_lottery.search.lottery",
    "SearchResult": "keras_lottery.search.results",
    "RoundRecord": "keras_lottery.search.records",
    "run_trials": "keras_lottery.search.trials",
    "merge_results": "keras_lottery.search.merge",
    "MergedResult": "keras_lottery.search.merge",
    "plot_overlap": "keras_lottery.search.plot",
    "EarlyBird": "keras_lottery.search.early_bird",
    "instability": "keras_lottery.search.instability",
    "instability_sweep": "keras_lottery.search.instability",
    "Instability": "keras_lottery.search.interpolation",
    "InstabilitySweep": "keras_lottery.search.interpolation",
    # deploy: smaller and faster models
    "shrink": "keras_lottery.deploy.shrink",
    "ShrinkReport": "keras_lottery.deploy.shrink",
    "ShrinkError": "keras_lottery.deploy.channel_cuts",
    "check_block_alignment": "keras_lottery.deploy.xnnpack",
    "check_xnnpack_sparse": "keras_lottery.deploy.xnnpack",
    "XnnpackSparseReport": "keras_lottery.deploy.xnnpack",
    "NMReport": "keras_lottery.deploy.nm",
    "check_n_m": "keras_lottery.deploy.nm",
    "export_tflite": "keras_lottery.deploy.tflite.export",
    "ExportReport": "keras_lottery.deploy.tflite.report",
    "ExportError": "keras_lottery.deploy.tflite.report",
    "inspect_tflite": "keras_lottery.deploy.tflite.interpreter",
    "read_tflite_weights": "keras_lottery.deploy.tflite.flatbuffer",
    "benchmark_tflite": "keras_lottery.deploy.tflite.benchmark",
    # interop and apps
    "from_tfmot": "keras_lottery.interop.tfmot",
    "load_mnist": "keras_lottery.apps.data",
    "load_mnist1d": "keras_lottery.apps.data",
    "iteration_batches": "keras_lottery.apps.data",
    "Dataset": "keras_lottery.apps.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_lottery' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # the same names, for type checkers and the API docs
    from keras_lottery.apps.data import (
        Dataset,
        iteration_batches,
        load_mnist,
        load_mnist1d,
    )
    from keras_lottery.core.copy import strip
    from keras_lottery.core.registry import prunable_weights, register_prunable
    from keras_lottery.core.rewind import (
        capture_init,
        checkpoint,
        reset_optimizer,
        rewind,
    )
    from keras_lottery.core.saving import load_model
    from keras_lottery.core.summary import (
        PruningSummary,
        WeightSummary,
        coverage,
        summary,
    )
    from keras_lottery.core.wrap import wrap
    from keras_lottery.core.wrapper import PrunableWrapper
    from keras_lottery.deploy.channel_cuts import ShrinkError
    from keras_lottery.deploy.nm import NMReport, check_n_m
    from keras_lottery.deploy.shrink import ShrinkReport, shrink
    from keras_lottery.deploy.tflite.benchmark import benchmark_tflite
    from keras_lottery.deploy.tflite.export import export_tflite
    from keras_lottery.deploy.tflite.flatbuffer import read_tflite_weights
    from keras_lottery.deploy.tflite.interpreter import inspect_tflite
    from keras_lottery.deploy.tflite.report import ExportError, ExportReport
    from keras_lottery.deploy.xnnpack import (
        XnnpackSparseReport,
        check_block_alignment,
        check_xnnpack_sparse,
    )
    from keras_lottery.errors import KerasLotteryError
    from keras_lottery.interop.tfmot import from_tfmot
    from keras_lottery.pruning.criteria import SNIP, GraSP, SynFlow
    from keras_lottery.pruning.gradual import (
        ConstantSparsity,
        GradualPruning,
        PolynomialDecay,
        PruningEvent,
        PruningSchedule,
        prune_to_sparsity,
    )
    from keras_lottery.pruning.granularity import (
        BlockGranularity,
        ChannelGranularity,
        Granularity,
        NMGranularity,
    )
    from keras_lottery.pruning.masks import (
        get_masks,
        randomize_signs,
        set_masks,
        shuffle_masks,
    )
    from keras_lottery.pruning.overlap import MaskOverlap, mask_overlap
    from keras_lottery.pruning.prune import prune
    from keras_lottery.pruning.report import Group, PruneReport
    from keras_lottery.pruning.scores import Criterion, register_criterion
    from keras_lottery.search.early_bird import EarlyBird
    from keras_lottery.search.instability import instability, instability_sweep
    from keras_lottery.search.interpolation import Instability, InstabilitySweep
    from keras_lottery.search.lottery import SearchError, lottery_search
    from keras_lottery.search.merge import MergedResult, merge_results
    from keras_lottery.search.plot import plot_overlap
    from keras_lottery.search.records import RoundRecord
    from keras_lottery.search.results import SearchResult
    from keras_lottery.search.schedule import (
        EarlyStopReadout,
        LotterySchedule,
        RewindCheckpoint,
    )
    from keras_lottery.search.trials import run_trials
