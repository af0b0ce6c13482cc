"""keras-lottery: the Lottery Ticket Hypothesis for Keras 3.

Wrap a model, prune it by magnitude, rewind it, and ship the winning ticket,
on the TensorFlow, JAX and PyTorch backends alike.
"""

from keras_lottery.criteria import (
    Group,
    PruneReport,
    get_masks,
    prune,
    set_masks,
    shuffle_masks,
)
from keras_lottery.errors import KerasLotteryError
from keras_lottery.export import (
    ExportError,
    ExportReport,
    benchmark_tflite,
    export_tflite,
    inspect_tflite,
    read_tflite_weights,
)
from keras_lottery.gradual import (
    ConstantSparsity,
    GradualPruning,
    PolynomialDecay,
    PruningSchedule,
    prune_to_sparsity,
)
from keras_lottery.granularity import (
    BlockGranularity,
    ChannelGranularity,
    Granularity,
    NMGranularity,
    NMReport,
    check_n_m,
)
from keras_lottery.model import (
    PruningSummary,
    WeightSummary,
    coverage,
    load_model,
    strip,
    summary,
    wrap,
)
from keras_lottery.registry import prunable_weights, register_prunable
from keras_lottery.results import RoundRecord, SearchResult
from keras_lottery.rewind import (
    capture_init,
    checkpoint,
    reset_optimizer,
    rewind,
)
from keras_lottery.schedule import EarlyStopReadout, LotterySchedule, RewindCheckpoint
from keras_lottery.search import SearchError, lottery_search
from keras_lottery.shrink import ShrinkError, ShrinkReport, shrink
from keras_lottery.tfmot import from_tfmot
from keras_lottery.trials import MergedResult, merge_results, run_trials
from keras_lottery.wrapper import PrunableWrapper
from keras_lottery.xnnpack import (
    XnnpackSparseReport,
    check_block_alignment,
    check_xnnpack_sparse,
)

__version__ = "0.1.0"

__all__ = [
    "BlockGranularity",
    "ChannelGranularity",
    "ConstantSparsity",
    "EarlyStopReadout",
    "ExportError",
    "ExportReport",
    "GradualPruning",
    "Granularity",
    "Group",
    "KerasLotteryError",
    "LotterySchedule",
    "MergedResult",
    "NMGranularity",
    "NMReport",
    "PolynomialDecay",
    "PrunableWrapper",
    "PruneReport",
    "PruningSchedule",
    "PruningSummary",
    "RewindCheckpoint",
    "RoundRecord",
    "SearchError",
    "SearchResult",
    "ShrinkError",
    "ShrinkReport",
    "WeightSummary",
    "XnnpackSparseReport",
    "benchmark_tflite",
    "capture_init",
    "check_block_alignment",
    "check_n_m",
    "check_xnnpack_sparse",
    "checkpoint",
    "coverage",
    "export_tflite",
    "from_tfmot",
    "get_masks",
    "inspect_tflite",
    "load_model",
    "lottery_search",
    "merge_results",
    "prunable_weights",
    "prune",
    "prune_to_sparsity",
    "read_tflite_weights",
    "register_prunable",
    "reset_optimizer",
    "rewind",
    "run_trials",
    "set_masks",
    "shrink",
    "shuffle_masks",
    "strip",
    "summary",
    "wrap",
]
