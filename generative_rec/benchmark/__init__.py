"""``genrec benchmark``: every model on the same users of the same split -> results.json, a table, plots.

Protocol (the one ``genrec eval`` and ``bench/baselines_ml100k.py`` use): leave-one-out, the test split,
full ranking over ALL items, each user's history masked. Every baseline trains on the training part of
the sequences only and is tuned on validation NDCG@10 (early stopping on it too); the configuration with
the best validation score is evaluated once on the test users. The LLM is a bundle (``--bundle``) or is
trained first from a run config (``--llm-config``) and decoded with the trie over the same users.

Three tiers, which differ only in grids and budgets (:data:`TIERS`):

- ``cpu``: fits in 30 minutes on 2 idle cores, LLM included: ``train/configs/cpu_tier.yaml`` (atomic IDs
  with a collaborative start from SASRec, every window, ~one pass in 300 LoRA steps), one or two
  configurations per iterative baseline with an epoch cap (the configurations are the best of the full
  grids on ML-100K validation), the full grids for the cheap models (item-kNN, content-kNN).
- ``cpu-long``: <= 2 hours on 2 cores: the same baselines, the same LLM config trained 4x longer.
- ``full``: for a GPU machine: the LLM trained on all training windows for several epochs
  (``train/configs/full_gpu.yaml``), every baseline's full grid without epoch caps.

Modules: :mod:`.tiers` (models, grids, budgets), :mod:`.store` (set-up record, one file per model),
:mod:`.runner` (runs the models; the LLM through ``evaluation.llm.evaluate_bundle_llm``, the path ``genrec
eval`` runs), :mod:`.tables` (comparison, Markdown), :mod:`.plots`, :mod:`.cli`.

Written to ``--output`` (default ``runs/benchmark-<tier>``): ``results.json`` (metrics, tuned parameters,
seeds, seconds, split, machine, commit, wall time), ``results.md``, ``per_user.npz`` (per-user accuracy of
every model, same user order: paired tests), ``metric_vs_k.png``, ``accuracy_vs_popularity.png``, and
``models/<name>.json|.npz``: each model's result, written atomically as soon as it is done, so
``--resume`` after a kill redoes only the models that had not finished.
"""

from generative_rec.benchmark.cli import add_arguments, command_line, main_args, register_cli
from generative_rec.benchmark.runner import LLMSource, run_baseline, run_benchmark, run_llm
from generative_rec.benchmark.store import ModelStore, ensure_prepared, setup_record
from generative_rec.benchmark.tables import compare, comparison_text, render_markdown, results_table
from generative_rec.benchmark.tiers import (
    CONTENT_MODELS,
    CPU_FIXED,
    CPU_GRIDS,
    DEFAULT_MODELS,
    KS,
    TARGET_RATIO,
    TIERS,
    Tier,
)

__all__ = [
    "CONTENT_MODELS", "CPU_FIXED", "CPU_GRIDS", "DEFAULT_MODELS", "KS", "TARGET_RATIO", "TIERS", "LLMSource",
    "ModelStore", "Tier", "add_arguments", "command_line", "compare", "comparison_text", "ensure_prepared",
    "main_args", "register_cli", "render_markdown", "results_table", "run_baseline", "run_benchmark", "run_llm",
    "setup_record",
]
