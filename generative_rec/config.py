"""Typed run configuration: one dataclass per stage, loaded from YAML with strict keys.

A run YAML has the sections ``data``, ``index``, ``model``, ``lora``, ``prompts``, ``train``, ``eval``
and ``output``. Unknown keys are errors (a typo must not silently fall back to a default).
Command lines override single values with ``--set section.key=value`` (YAML syntax for the value).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from generative_rec.collaborative import CollaborativeSection
from generative_rec.errors import ConfigError
from generative_rec.indexing.base import IndexConfig
from generative_rec.modeling import LoraSettings
from generative_rec.options import _coerce, from_dict  # noqa: F401  (re-exported: config.from_dict)
from generative_rec.prompts import resolve_align


@dataclass
class DataSection:
    path: str = field(default="data/ml-100k", metadata={"help": "prepared data folder"})
    prepare: dict | None = field(default=None, metadata={"help": "PrepareConfig fields: prepare `path` first if it does not exist"})


@dataclass
class ModelSection:
    base: str = field(default="smollm2-135m", metadata={"help": "smollm2-135m (embedded), tiny-random, an HF folder or hub id"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16"})
    tiny: dict = field(default_factory=lambda: {"hidden": 64, "layers": 2, "heads": 2, "vocab": 400},
                       metadata={"help": "size of the tiny-random model (tests)"})
    popularity_start: bool = field(default=True, metadata={"help": "schemes that add tokens: untie the LM head "
                                   "and calibrate the new tokens' output rows to training popularity before training"})
    head_content_scale: float = field(default=0.3, metadata={"help": "with popularity_start: weight of the "
                                      "title-based part of the new output rows at the start"})
    cold_rows: bool = field(default=True, metadata={
        "help": "one-token IDs (atomic): after training, items with no training interaction get LM-head rows "
                "predicted from their text by a ridge map fitted on the trained items (cold_items.py)"})
    text_rows: float = field(default=0.0, metadata={
        "help": "one-token IDs (atomic): tie each item's LM-head row to its text (row + a trained projection of "
                "the item's text vector) and drop this share of trained items' own rows at every step, so "
                "items never seen in training are scored from their text (text_rows.py; replaces cold_rows). "
                "0: off"})
    collaborative: CollaborativeSection = field(default_factory=CollaborativeSection, metadata={
        "help": "collaborative knowledge in the item tokens (start / fuse / distillation); see collaborative.py"})


@dataclass
class PromptSection:
    dir: str | None = field(default=None, metadata={"help": "template folder (default: the repo's prompts/)"})
    tasks: dict = field(default_factory=lambda: {"next_item": 1.0},
                        metadata={"help": "task -> weight: weight x natural size examples per epoch "
                                          "(next_item: one per user window; item_title: one per item)"})
    templates: list[str] | None = field(default=None, metadata={
        "help": "train only these template keys (task/name); a task in `tasks` none of them belongs to trains on "
                "all of its templates that are not held out"})
    inference: str = field(default="next_item/list-ids", metadata={"help": "template used by eval / serving"})
    max_history: int = field(default=20, metadata={"help": "most recent history items shown in a prompt"})
    min_context: int = field(default=1, metadata={"help": "items of context before the first trained target"})
    windows: str = field(default="last", metadata={"help": "last: each user's most recent window; all: every window"})
    align: int | str = field(default="auto", metadata={
        "help": "pad each next-item prompt with leading filler tokens to a multiple of this many tokens, so "
                "item IDs start on a KV-cache block boundary and vLLM reuses the whole prompt for every beam "
                "(32: vLLM's CPU block; 0: off; auto: 32 for multi-token IDs, 0 for one-token IDs); training "
                "packs sequences with 0..align-1 fillers. Recorded in the bundle"})
    task_options: dict = field(default_factory=dict, metadata={"help": "task name -> task-specific options"})

    def __post_init__(self):
        resolve_align(self.align, True)  # a bad value is a ConfigError when the config loads, not at training


@dataclass
class TrainSection:
    epochs: float = 1.0
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps (overrides epochs)"})
    batch_size: int = field(default=8, metadata={"help": "examples per micro-batch per process"})
    grad_accum: int = 1
    lr: float = 1e-3
    token_lr: float | None = field(default=None, metadata={
        "help": "learning rate of the new item-token rows (input embedding and LM head); None: lr"})
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    scheduler: str = field(default="cosine", metadata={"help": "cosine | linear | constant"})
    max_grad_norm: float = 1.0
    loss_vocab: str = field(default="full", metadata={
        "help": "full: softmax over the whole vocabulary; ids: ID targets softmax over the ID tokens only "
                "(what constrained decoding ranks; cheaper)"})
    seed: int = 0
    log_every: int = 10
    eval_every: int = field(default=0, metadata={"help": "validate every N steps (0: only at the end)"})
    eval_users: int = field(default=100, metadata={"help": "validation users sampled for periodic validation"})
    save_every: int = field(default=100, metadata={"help": "checkpoint every N optimizer steps (0: never)"})
    keep_checkpoints: int = 2
    report_to: str = field(default="auto", metadata={
        "help": "experiment trackers for loss and validation curves: auto (TensorBoard when installed, "
                "written to <output>/logs), none, or accelerate tracker names (tensorboard,wandb,...)"})
    merge: bool = field(default=True, metadata={"help": "write the merged model into the bundle"})


@dataclass
class EvalSection:
    split: str = "test"
    users: int | None = field(default=None, metadata={"help": "evaluate a seeded sample of N users (None: all)"})
    seed: int = 0
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    num_beams: int | None = field(default=None, metadata={"help": "beams (>= max k; default max k)"})
    batch_size: int = 16
    template: str | None = field(default=None, metadata={"help": "next_item template (default: the bundle's inference one)"})
    mask_history: bool = True
    baselines: list[str] = field(default_factory=lambda: ["pop"])
    unconstrained_users: int = field(default=64, metadata={
        "help": "also decode this many users WITHOUT the trie and report invalid / duplicate IDs (0: skip)"})
    explain_users: int = field(default=0, metadata={
        "help": "also explain the target and top-1 item of this many users and score the explanations"})


@dataclass
class RunConfig:
    data: DataSection = field(default_factory=DataSection)
    index: IndexConfig = field(default_factory=IndexConfig)
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSettings = field(default_factory=LoraSettings)
    prompts: PromptSection = field(default_factory=PromptSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    output: str = field(default="runs/demo", metadata={"help": "the bundle folder to write"})


# --------------------------------------------------------------------------- loading
# from_dict (strict keys and types) lives in generative_rec.options, shared with scheme and baseline options.


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    d: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    for o in overrides or []:
        if "=" not in o:
            raise ConfigError(f"--set expects section.key=value, got {o!r}")
        key, val = o.split("=", 1)
        parts = key.split(".")
        cur = d
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
            if not isinstance(cur, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
        cur[parts[-1]] = yaml.safe_load(val)
    return from_dict(RunConfig, d)


def to_yaml(cfg) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
