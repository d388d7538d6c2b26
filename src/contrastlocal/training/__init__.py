"""The three-stage training recipe: configs, stages, evaluation, checkpoints, results tables.

Stage 1 (:func:`pretrain_global`) trains the encoder and g_1 with a global contrastive loss,
stage 2 (:func:`pretrain_local`) the first l decoder blocks and g_2 with a local loss on top of
the frozen encoder, stage 3 (:func:`finetune`) the whole UNet on a few labelled volumes, choosing
the checkpoint by validation 3D Dice; :func:`train_baseline` is stage 3 from random weights and
:func:`pretrain_joint` optimises L_g + λ_l·L_l in one stage. :func:`evaluate` reports per-class
3D Dice and HD95 at native resolution. :func:`run_recipe` runs the whole recipe (stages,
fine-tuning grid, evaluation, tables and plots); its steps (:func:`plan_stages`,
:func:`plan_cells`, :func:`run_stage`, :func:`run_cell`) are callable one by one, keyed by their
settings.
"""

from __future__ import annotations

from ._distributed import init_distributed, is_main_process, main_process_first
from ._logging import read_metrics
from .checkpoint import (
    architecture_signature,
    check_architecture,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from .config import (
    DATASETS,
    ExperimentConfig,
    FinetuneConfig,
    GlobalStageConfig,
    LocalStageConfig,
    ModelConfig,
    RuntimeConfig,
    config_to_dict,
    load_config,
    preset,
)
from .evaluation import EvaluationResult, Volume, evaluate, load_volumes, predict_volume
from .metrics import (
    DICE_DEFINITIONS,
    ImageSetDice,
    dice_counts,
    dice_over_images,
    dice_per_class,
    hd95_per_class,
    surface_distances,
)
from .plan import (
    KEYED_LAYOUT,
    RUN_LAYOUT,
    FinetuneCell,
    Layout,
    RecipePlan,
    StageCell,
    init_keys,
    plan_cells,
    plan_finetune,
    plan_joint,
    plan_recipe,
    plan_stages,
    select_labelled,
    settings_key,
)
from .recipe import (
    CellOutcome,
    FinetuneSplits,
    RecipeResult,
    open_run_directory,
    run_cell,
    run_lock,
    run_recipe,
    run_stage,
)
from .results import INIT_LABELS, format_results_table, results_to_csv, write_results
from .stages import (
    StageResult,
    build_unet,
    finetune,
    pretrain_global,
    pretrain_joint,
    pretrain_local,
    train_baseline,
)
from .tables import TablePlan, TableResult, reproduce_table, table_plan

__all__ = [
    "DATASETS",
    "DICE_DEFINITIONS",
    "INIT_LABELS",
    "KEYED_LAYOUT",
    "RUN_LAYOUT",
    "CellOutcome",
    "EvaluationResult",
    "ExperimentConfig",
    "FinetuneCell",
    "FinetuneConfig",
    "FinetuneSplits",
    "GlobalStageConfig",
    "ImageSetDice",
    "Layout",
    "LocalStageConfig",
    "ModelConfig",
    "RecipePlan",
    "RecipeResult",
    "RuntimeConfig",
    "StageCell",
    "StageResult",
    "TablePlan",
    "TableResult",
    "Volume",
    "architecture_signature",
    "build_unet",
    "check_architecture",
    "config_to_dict",
    "dice_counts",
    "dice_over_images",
    "dice_per_class",
    "evaluate",
    "finetune",
    "format_results_table",
    "hd95_per_class",
    "init_distributed",
    "init_keys",
    "is_main_process",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_config",
    "load_volumes",
    "load_weights",
    "main_process_first",
    "open_run_directory",
    "plan_cells",
    "plan_finetune",
    "plan_joint",
    "plan_recipe",
    "plan_stages",
    "predict_volume",
    "preset",
    "pretrain_global",
    "pretrain_joint",
    "pretrain_local",
    "read_metrics",
    "reproduce_table",
    "results_to_csv",
    "run_cell",
    "run_lock",
    "run_recipe",
    "run_stage",
    "save_checkpoint",
    "select_labelled",
    "settings_key",
    "surface_distances",
    "table_plan",
    "train_baseline",
    "write_results",
]
