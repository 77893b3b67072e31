"""LoRA fine-tuning with a target-only loss, task mixing, checkpoints and exact resume; writes the bundle.

``train(cfg)`` is what ``accelerate launch train/finetune.py`` and ``genrec train`` both run. The same
code runs on one CPU, one GPU or many (accelerate: DDP / FSDP / DeepSpeed by the launcher's config).

Efficiency on small machines:

- *sequence-capable* templates (prompt ends with the history) train on a whole user window in one forward
  pass with the loss on every item's ID (each position sees exactly the prompt it would see at inference);
- LM-head logits are computed only at positions that carry a loss (``TargetOnlyLM``).

Resume: the examples of an epoch are a pure function of (seed, epoch), so a checkpoint stores the step,
the epoch and the micro-batches consumed, the trainable weights, the optimizer, the scheduler and the RNG
states; ``--resume`` rebuilds the same batches and skips what was consumed.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generative_rec.config import RunConfig, to_yaml
from generative_rec.data import PrepareConfig, RecData, prepare
from generative_rec.errors import ConfigError
from generative_rec.indexing import build_index
from generative_rec.io import atomic_dir, atomic_write_json, read_json
from generative_rec.modeling import (
    CollaborativeFuser,
    add_item_tokens,
    apply_lora,
    build_tiny_random,
    collaborative_start,
    count_parameters,
    load_model,
    pick_dtype,
    popularity_start,
    resolve_model,
    token_vectors,
    untie_output_embeddings,
)
from generative_rec.prompts import IGNORE, Renderer, Template, load_templates
from generative_rec.tasks import TASKS, TaskContext, build_task
from generative_rec.tasks.next_item import windows  # noqa: F401  (re-exported for callers and tests)
from generative_rec.text_rows import TextRows, text_vectors

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the loss
class TargetOnlyLM(nn.Module):
    """Wraps a (peft) causal LM: mean cross-entropy over target tokens, LM head applied only there.

    ``id_vocab`` (sorted token ids; the union of every item ID's tokens): a target that is an ID token
    gets its softmax over the ID vocabulary only (what constrained decoding ranks; also much cheaper than
    the full vocabulary); other targets (text, EOS) keep the full vocabulary.

    ``teacher`` + ``distill`` (single-token IDs): at every target that is an item token with at least one
    item before it in the row, add ``distill * T^2 * KL(teacher || student)`` over the catalogue, the
    teacher scoring exactly the items the row shows before that position; the cross-entropy gets weight
    ``1 - distill``.
    """

    def __init__(self, model, id_vocab: list[int] | None = None, item_tokens: list[int] | None = None,
                 teacher=None, distill: float = 0.0, temperature: float = 1.0, fuser=None, text_rows=None):
        super().__init__()
        self.model = model
        self.fuser = fuser  # CollaborativeFuser (fuse mode): trained with the model, hooks already attached
        self.text_rows = text_rows  # TextRows (model.text_rows): trained with the model, hook already attached
        self.teacher, self.distill, self.temperature = teacher, float(distill), float(temperature)
        vocab = self._vocab_size()
        for name in ("id_vocab", "vocab_pos", "item_tokens", "item_of_token"):
            self.register_buffer(name, None, persistent=False)
        if id_vocab is not None:
            ids = torch.tensor(sorted(set(id_vocab)), dtype=torch.long)
            pos = torch.full((vocab,), -1, dtype=torch.long)
            pos[ids] = torch.arange(len(ids))
            self.register_buffer("id_vocab", ids, persistent=False)
            self.register_buffer("vocab_pos", pos, persistent=False)
        if item_tokens is not None:
            it = torch.tensor(item_tokens, dtype=torch.long)
            item_of = torch.full((vocab,), -1, dtype=torch.long)
            item_of[it] = torch.arange(len(it))
            self.register_buffer("item_tokens", it, persistent=False)
            self.register_buffer("item_of_token", item_of, persistent=False)
        if self.distill and (self.teacher is None or self.item_tokens is None):
            raise ConfigError("distillation needs a teacher and single-token item IDs")

    def _vocab_size(self) -> int:
        head = self._parts()[1]
        adapter = getattr(head, "token_adapter", None)
        return (adapter.base_layer.weight if adapter is not None else head.weight).shape[0]

    def _rows(self, head, ids: torch.Tensor) -> torch.Tensor:
        rows = head_rows(head, ids)
        if self.fuser is not None:
            rows = rows + self.fuser.output_rows(ids).to(rows.dtype)
        if self.text_rows is not None:
            rows = self.text_rows.rows(rows, ids, self.training)
        return rows

    def _hide_untrained(self, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """With text rows, items without training interactions are not in the training softmax."""
        if self.text_rows is None:
            return logits
        return logits.masked_fill(self.text_rows.untrained_tokens(ids), -1e4)

    def _parts(self):
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return base.model, base.get_output_embeddings()

    def forward(self, input_ids, attention_mask, labels):
        decoder, head = self._parts()
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        targets = labels[:, 1:]
        sel = targets != IGNORE
        h, y = hidden[:, :-1][sel], targets[sel]
        n = sel.sum()
        if self.id_vocab is None:
            loss = F.cross_entropy(head(h).float(), y, reduction="sum")
        else:
            pos = self.vocab_pos[y]
            ids = pos >= 0
            loss = h.new_zeros((), dtype=torch.float32)
            if bool(ids.any()):
                w = self._rows(head, self.id_vocab)
                logits = self._hide_untrained((h[ids] @ w.T).float(), self.id_vocab)
                loss = loss + F.cross_entropy(logits, pos[ids], reduction="sum")
            if not bool(ids.all()):
                loss = loss + F.cross_entropy(head(h[~ids]).float(), y[~ids], reduction="sum")
        loss = loss / n.clamp_min(1)
        if self.distill:
            kd = self._distill_loss(input_ids, sel, h, y, head)
            if kd is not None:
                loss = (1.0 - self.distill) * loss + self.distill * kd
        return loss, n

    def _distill_loss(self, input_ids, sel, h, y, head):
        """Mean over distilled positions of ``T^2 * KL(teacher_T || student_T)`` over the catalogue. The
        teacher scores each position's context (the items the row shows up to it) as it scores a user."""
        items = self.item_of_token[input_ids[:, :-1]]  # the item at each input position (-1: none)
        count = (items >= 0).long().cumsum(1)  # items shown up to and including each position
        keep = (self.item_of_token[y] >= 0) & (count[sel] > 0)
        if not bool(keep.any()):
            return None
        rows, cols = (t[keep] for t in torch.nonzero(sel, as_tuple=True))
        shown = [items[r][items[r] >= 0].cpu().numpy() for r in range(items.shape[0])]
        contexts = [shown[r][: int(count[r, c])] for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
        t_logits = self.teacher.next_item_logits(contexts).to(h.device).float()
        s_logits = self._hide_untrained((h[keep] @ self._rows(head, self.item_tokens).T).float(), self.item_tokens)
        t_logits = self._hide_untrained(t_logits, self.item_tokens)
        temp = self.temperature
        kl = F.kl_div(F.log_softmax(s_logits / temp, -1), F.log_softmax(t_logits / temp, -1), log_target=True,
                      reduction="batchmean")
        return kl * temp * temp


def head_rows(head, ids: torch.Tensor | None) -> torch.Tensor:
    """Rows ``ids`` of an LM head's effective weight (peft's trainable-token rows applied), cheaply: only
    the requested rows are gathered (``ids=None``: the whole weight)."""
    adapter = getattr(head, "token_adapter", None)
    if adapter is None:
        return head.weight if ids is None else head.weight[ids]
    base = adapter.base_layer.weight
    if ids is None:
        return adapter.get_merged_weights(adapter.active_adapters)
    rows = base[ids]
    for name in adapter.active_adapters:
        tok = torch.tensor(adapter.token_indices[name], device=base.device)
        where = torch.full((base.shape[0],), -1, dtype=torch.long, device=base.device)
        where[tok] = torch.arange(len(tok), device=base.device)
        at = where[ids]
        hit = at >= 0
        if bool(hit.any()):
            delta = adapter.trainable_tokens_delta[name]
            rows = rows.clone() if not rows.requires_grad else rows
            rows = torch.where(hit[:, None], delta[at.clamp_min(0)].to(rows.dtype), rows)
    return rows


# --------------------------------------------------------------------------- examples
@dataclass
class TrainingSetup:
    cfg: RunConfig
    data: RecData
    renderer: Renderer
    templates: dict[str, list[Template]]
    new_token_ids: list[int]


def epoch_examples(s: TrainingSetup, epoch: int) -> list[tuple[list[int], list[int]]]:
    """All examples of one epoch (every task in the mixture, shuffled); a pure function of (seed, epoch)."""
    cfg = s.cfg
    rng = random.Random(cfg.train.seed * 1_000_003 + epoch)
    ctx = TaskContext(s.data, s.renderer, cfg.prompts.max_history, cfg.prompts.min_context, cfg.prompts.windows,
                      cfg.prompts.task_options)
    out: list[tuple[list[int], list[int]]] = []
    for task, weight in cfg.prompts.tasks.items():
        out += build_task(task, ctx, s.templates.get(task, []), weight, rng)
    rng.shuffle(out)
    return out


def make_batches(examples, batch_size: int, pad_id: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Length-grouped batches (sorted within shuffled chunks of 32 batches) to waste little padding."""
    rng = random.Random(seed)
    chunk = batch_size * 32
    groups = []
    for lo in range(0, len(examples), chunk):
        part = sorted(examples[lo: lo + chunk], key=lambda e: len(e[0]))
        groups += [part[j: j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(groups)
    return [collate(g, pad_id) for g in groups]


def collate(group, pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in group)
    ids = torch.full((len(group), width), pad_id, dtype=torch.long)
    labels = torch.full((len(group), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(group), width), dtype=torch.long)
    for r, (i, lab) in enumerate(group):
        ids[r, : len(i)] = torch.tensor(i)
        labels[r, : len(lab)] = torch.tensor(lab)
        mask[r, : len(i)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _tied(model) -> bool:
    head = model.get_output_embeddings()
    return head is not None and head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def first_token_popularity(id_tokens, train_counts, new_ids: set[int]) -> dict[int, float]:
    """Training popularity summed per first ID token (only tokens the scheme added)."""
    out: dict[int, float] = {}
    for seq, c in zip(id_tokens, train_counts, strict=True):
        if seq and seq[0] in new_ids:
            out[seq[0]] = out.get(seq[0], 0.0) + float(c)
    return out


# --------------------------------------------------------------------------- set-up
def ensure_data(cfg: RunConfig, accelerator=None) -> RecData:
    path = Path(cfg.data.path)
    if not (path / "meta.json").exists():
        if not cfg.data.prepare:
            raise ConfigError(f"no prepared data at {path}; run `genrec prepare` or add a data.prepare section")
        if accelerator is None or accelerator.is_main_process:
            prepare(PrepareConfig(**{**cfg.data.prepare, "output": str(path)}))
        if accelerator is not None:
            accelerator.wait_for_everyone()
    return RecData(path)


def select_templates(cfg: RunConfig) -> dict[str, list[Template]]:
    """Each task's training templates: its templates that are not held out, narrowed to the keys of
    ``prompts.templates`` that belong to the task.

    ``prompts.templates`` pins templates per task: a task in the mixture (weight > 0) of which it names no
    template keeps all of its own, so a config pinning ``[next_item/compact]`` can mix in another task with
    ``--set 'prompts.tasks={next_item: 1.0, explain: 0.3}'`` alone (the pick is logged). A key that names no
    template, or a held-out one, is an error; so is a task in the mixture without a template to train.
    """
    allt = load_templates(cfg.prompts.dir)
    where = cfg.prompts.dir or "prompts/"
    pinned = cfg.prompts.templates
    if pinned is not None:
        known = {t.key: t for ts in allt.values() for t in ts}
        unknown = [k for k in pinned if k not in known]
        if unknown:
            raise ConfigError(f"prompts.templates: unknown template(s) {unknown} in {where}; known: {sorted(known)}")
        heldout = [k for k in pinned if known[k].heldout]
        if heldout:
            raise ConfigError(f"prompts.templates: {heldout} held out (never trained on; used to measure "
                              f"unseen-template performance); pin templates that are not held out")
    out = {}
    for task, ts in allt.items():
        keep = [t for t in ts if not t.heldout]
        if pinned is not None:
            mine = [t for t in keep if t.key in pinned]
            if not mine and keep and cfg.prompts.tasks.get(task):
                log.info("prompts.templates names no %s template: the task trains on all of its own: %s",
                         task, ", ".join(t.key for t in keep))
            keep = mine or keep
        out[task] = keep
    for task, weight in cfg.prompts.tasks.items():
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r} in prompts.tasks (known: {', '.join(sorted(TASKS))})")
        if weight and not out.get(task):
            what = "only held-out templates" if allt.get(task) else "no templates"
            raise ConfigError(f"no templates for task {task!r}: {where} has {what} for it; add a prompts/*.yaml "
                              f"with `task: {task}` and a template without `heldout: true`")
    return out


def load_base(cfg: RunConfig, data: RecData, work_dir: Path):
    dtype = pick_dtype(cfg.model.dtype)
    if cfg.model.base == "tiny-random":
        corpus = data.titles + data.texts + ["0123456789"] + [t.prompt for ts in load_templates(cfg.prompts.dir).values() for t in ts]
        model, tok = build_tiny_random(corpus, work_dir / "tiny-tokenizer", seed=cfg.train.seed, **cfg.model.tiny)
        return model.to(dtype), tok
    return load_model(resolve_model(cfg.model.base), dtype=dtype)


def resolve_trackers(report_to: str) -> list[str]:
    """``train.report_to``: auto (TensorBoard when it is installed), none, or tracker names for accelerate
    (comma-separated: tensorboard, wandb, mlflow, ...)."""
    if report_to in ("none", "", None):
        return []
    if report_to == "auto":
        import importlib.util

        return ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else []
    return [t.strip() for t in report_to.split(",") if t.strip()]


def flat_config(cfg: RunConfig) -> dict:
    """The run config as flat ``section.key -> scalar`` (what trackers accept as hyper-parameters)."""
    out: dict = {}

    def walk(prefix: str, v) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, (int, float, str, bool)):
            out[prefix] = v
        else:
            out[prefix] = str(v)

    walk("", asdict(cfg))
    return out


def _fit_collaborative(cfg: RunConfig, data: RecData, accelerator):
    """The collaborative source, fitted once (the main process first; the others then read its cache)."""
    from generative_rec.collaborative import fit_collaborative

    if accelerator.is_main_process:
        collab = fit_collaborative(data, cfg.model.collaborative)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        collab = fit_collaborative(data, cfg.model.collaborative)
    if collab.net is not None:
        collab.net.to(accelerator.device)
    return collab


def single_token_items(id_tokens: list[list[int]]) -> list[int] | None:
    """Each item's token when every ID is one distinct token (atomic IDs), else None."""
    if all(len(t) == 1 for t in id_tokens) and len({t[0] for t in id_tokens}) == len(id_tokens):
        return [t[0] for t in id_tokens]
    return None


def make_loss(cfg: RunConfig, model, id_tokens: list[list[int]], collab=None, fuser=None,
              text_rows=None) -> TargetOnlyLM:
    """The training objective of ``cfg``: target-only CE (over the ID vocabulary for ID targets when
    ``train.loss_vocab: ids``) plus, when configured, distillation from the collaborative source."""
    c = cfg.model.collaborative
    items = single_token_items(id_tokens)
    if c.distill and items is None:
        raise ConfigError("model.collaborative.distill needs single-token item IDs (index.scheme: atomic)")
    if cfg.train.loss_vocab not in ("full", "ids"):
        raise ConfigError(f"train.loss_vocab must be 'full' or 'ids', not {cfg.train.loss_vocab!r}")
    vocab = sorted({t for seq in id_tokens for t in seq}) if cfg.train.loss_vocab == "ids" else None
    return TargetOnlyLM(model, id_vocab=vocab, item_tokens=items, teacher=collab if c.distill else None,
                        distill=c.distill, temperature=c.temperature, fuser=fuser, text_rows=text_rows)


# --------------------------------------------------------------------------- checkpoints
def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(out: Path, accelerator, wrapper, optimizer, scheduler, state: dict, keep: int) -> None:
    ckpt_root = out / "checkpoints"
    target = ckpt_root / f"step-{state['step']:07d}"
    if accelerator.is_main_process:
        with atomic_dir(target, overwrite=True) as tmp:
            torch.save(trainable_state(accelerator.unwrap_model(wrapper)), tmp / "trainable.pt")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save({"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
                       tmp / "rng.pt")
            atomic_write_json(tmp / "state.json", state)
        old = sorted(ckpt_root.glob("step-*"))[:-keep] if keep > 0 else []
        for o in old:
            shutil.rmtree(o, ignore_errors=True)
    accelerator.wait_for_everyone()


def latest_checkpoint(out: Path) -> Path | None:
    cks = sorted(p for p in (out / "checkpoints").glob("step-*") if (p / "state.json").exists())
    return cks[-1] if cks else None


def load_checkpoint(path: Path, accelerator, wrapper, optimizer, scheduler) -> dict:
    model = accelerator.unwrap_model(wrapper)
    saved = torch.load(path / "trainable.pt", map_location="cpu")
    params = dict(model.named_parameters())
    missing = [n for n in saved if n not in params]
    if missing:
        raise ConfigError(f"checkpoint {path} does not match the model (unknown parameters {missing[:3]})")
    with torch.no_grad():
        for n, v in saved.items():
            params[n].copy_(v.to(params[n].device, params[n].dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu"))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu"))
    rng = torch.load(path / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    return read_json(path / "state.json")


# --------------------------------------------------------------------------- the loop
def param_groups(model: torch.nn.Module, t) -> list[dict]:
    """Optimizer groups: the new item-token rows (peft's ``trainable_tokens_delta``) at ``t.token_lr`` when
    set — they start from scratch while LoRA only nudges a pretrained model — everything else at ``t.lr``."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    tokens = [p for n, p in params if "trainable_tokens_delta" in n]
    if t.token_lr is None or not tokens:
        return [{"params": [p for _, p in params]}]
    return [{"params": [p for n, p in params if "trainable_tokens_delta" not in n]},
            {"params": tokens, "lr": t.token_lr}]


def train(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Fine-tune and write the bundle to ``cfg.output``. Returns the bundle path."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import get_scheduler


    out = Path(cfg.output)
    if (out / "bundle.json").exists() and not (overwrite or resume):
        raise FileExistsError(f"{out} already holds a bundle (use --overwrite to replace it)")
    if not resume and (out / "checkpoints").exists():
        if not overwrite:
            raise FileExistsError(f"{out} has checkpoints of an earlier run: use --resume to continue it "
                                  f"or --overwrite to start again")
        shutil.rmtree(out / "checkpoints")
    mixed = "bf16" if pick_dtype(cfg.model.dtype) == torch.bfloat16 and torch.cuda.is_available() else "no"
    trackers = resolve_trackers(cfg.train.report_to)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.train.grad_accum, mixed_precision=mixed,
                              cpu=not torch.cuda.is_available(), log_with=trackers or None,
                              project_dir=str(out / "logs"))
    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    out.mkdir(parents=True, exist_ok=True)
    data = ensure_data(cfg, accelerator)
    index = build_index(data, cfg.index)
    model, tok = load_base(cfg, data, out / "work")
    if pick_dtype(cfg.model.dtype) == torch.bfloat16 and not torch.cuda.is_available():
        model = model.float()  # bf16 matmuls are slow on CPUs without bf16 units
    new_ids = add_item_tokens(model, tok, index.new_tokens, index.token_items, data.titles)
    id_tokens = index.token_ids(tok)
    trie = index.build_trie(tok)
    domain = data.meta.get("domain", "item")
    renderer = Renderer(tok, id_tokens, data.titles, domain, align=cfg.prompts.align)
    templates = select_templates(cfg)
    setup = TrainingSetup(cfg, data, renderer, templates, new_ids)
    # Schedule: micro-batches per epoch are known up front (examples are a function of seed and epoch).
    first = epoch_examples(setup, 0)
    if not first:
        raise ConfigError("no training examples (are the users' training sequences long enough?)")
    start_info = {}
    collab = None
    if cfg.model.collaborative.enabled:
        collab = _fit_collaborative(cfg, data, accelerator)
        if new_ids:
            untie_output_embeddings(model)
            start_info["collaborative"] = collaborative_start(
                model, tok, index.new_tokens, index.token_items, collab.item_embeddings,
                cfg.model.collaborative.input_share, cfg.model.collaborative.output_share,
                seed=cfg.model.collaborative.seed)
            accelerator.print(f"collaborative start from {collab.source}: {start_info['collaborative']}")
    if cfg.model.popularity_start and new_ids:
        start_info["popularity"] = popularity_start(model, make_batches(first[:32], 16, tok.pad_token_id, 0),
                                      first_token_popularity(id_tokens, data.train_counts, set(new_ids)),
                                      content_scale=cfg.model.head_content_scale)
        accelerator.print(f"popularity start: {start_info['popularity']}")
    text_input = _text_features(cfg, model, tok, id_tokens, new_ids, data)
    torch.manual_seed(cfg.train.seed)
    model = apply_lora(model, cfg.lora, new_ids, untied=not _tied(model))
    n_train, n_total = count_parameters(model)
    world = accelerator.num_processes
    micro_per_epoch = math.ceil(len(first) / cfg.train.batch_size) // world
    steps_per_epoch = max(1, micro_per_epoch // cfg.train.grad_accum)
    total = cfg.train.max_steps if cfg.train.max_steps is not None else max(1, round(cfg.train.epochs * steps_per_epoch))
    fuser = None
    if collab is not None and cfg.model.collaborative.mode == "fuse" and new_ids:
        fuser = CollaborativeFuser(new_ids, token_vectors(index.new_tokens, index.token_items, collab.item_embeddings),
                                   len(tok), model.get_base_model().config.hidden_size)
        fuser.attach(model)
    text_rows = None
    if text_input is not None:
        text_rows = TextRows(text_input[0], text_vectors(text_input[1]),
                             np.asarray(data.train_counts) > 0, len(tok), model.get_base_model().config.hidden_size,
                             cfg.model.text_rows)
        text_rows.attach(model)
    wrapper = make_loss(cfg, model, id_tokens, collab, fuser, text_rows)
    optimizer = torch.optim.AdamW(param_groups(wrapper, cfg.train), lr=cfg.train.lr,
                                  weight_decay=cfg.train.weight_decay)
    scheduler = get_scheduler(cfg.train.scheduler, optimizer, num_warmup_steps=int(cfg.train.warmup_ratio * total),
                              num_training_steps=max(total, 1))
    wrapper, optimizer, scheduler = accelerator.prepare(wrapper, optimizer, scheduler)
    state = {"step": 0, "epoch": 0, "micro_in_epoch": 0, "tokens": 0, "target_tokens": 0, "elapsed_s": 0.0,
             "log": []}
    if resume:
        ck = latest_checkpoint(out)
        if ck is None:
            log.warning("--resume: no checkpoint in %s, starting from step 0", out / "checkpoints")
        else:
            state = load_checkpoint(ck, accelerator, wrapper, optimizer, scheduler)
            accelerator.print(f"resumed from {ck} (step {state['step']}, epoch {state['epoch']})")
    accelerator.print(
        f"training {cfg.model.base} + LoRA r={cfg.lora.r}: {n_train:,} trainable / {n_total:,} params; "
        f"{index.describe()}; {len(first)} examples/epoch, {total} optimizer steps, {world} process(es)")

    if trackers:
        accelerator.init_trackers("train", config=flat_config(cfg))
    val_users = data.sample_users(cfg.train.eval_users, seed=cfg.train.seed)
    bar = tqdm(total=total, initial=state["step"], desc="train", disable=not accelerator.is_main_process,
               dynamic_ncols=True)
    t_start = time.time() - state["elapsed_s"]
    wrapper.train()
    window_loss, window_n, t_window, tok_window = 0.0, 0, time.time(), 0
    if cfg.train.eval_every and state["step"] == 0:  # the learning curve's first point: the start itself
        t_val = time.time()
        m = _validate(accelerator, wrapper, renderer, trie, data, val_users, cfg, templates)
        state["valid_s"] = time.time() - t_val
        if m is not None:
            state["log"].append({"step": 0, "tokens": 0, "elapsed_s": round(state["valid_s"], 1), "train_s": 0.0,
                                 **{f"valid_{k}": v for k, v in m.items()}})
            accelerator.log({f"valid/{k}": v for k, v in m.items()}, step=0)
            accelerator.print(f"step 0: validation {_fmt(m)}")
    done = state["step"] >= total
    while not done:
        examples = first if state["epoch"] == 0 else epoch_examples(setup, state["epoch"])
        batches = make_batches(examples, cfg.train.batch_size, tok.pad_token_id, cfg.train.seed + state["epoch"])
        mine = batches[accelerator.process_index::world][: micro_per_epoch]
        for mi in range(state["micro_in_epoch"], len(mine)):
            batch = {k: v.to(accelerator.device) for k, v in mine[mi].items()}
            with accelerator.accumulate(wrapper):
                loss, n_tgt = wrapper(**batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.train.max_grad_norm:
                    accelerator.clip_grad_norm_(wrapper.parameters(), cfg.train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["micro_in_epoch"] = mi + 1
            ntok = int(batch["attention_mask"].sum())
            state["tokens"] += ntok * world
            state["target_tokens"] += int(n_tgt) * world
            tok_window += ntok * world
            window_loss += float(loss.detach())
            window_n += 1
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            bar.update(1)
            if state["step"] % cfg.train.log_every == 0 or state["step"] == total:
                dt = time.time() - t_window
                rec = {"step": state["step"], "loss": round(window_loss / max(window_n, 1), 4),
                       "lr": scheduler.get_last_lr()[0], "tokens_per_s": round(tok_window / max(dt, 1e-9), 1),
                       "elapsed_s": round(time.time() - t_start, 1)}
                state["log"].append(rec)
                accelerator.log({"train/loss": rec["loss"], "train/lr": rec["lr"],
                                 "train/tokens_per_s": rec["tokens_per_s"], "train/tokens": state["tokens"]},
                                step=state["step"])
                bar.set_postfix(loss=rec["loss"], tok_s=rec["tokens_per_s"])
                window_loss, window_n, t_window, tok_window = 0.0, 0, time.time(), 0
            if cfg.train.eval_every and state["step"] % cfg.train.eval_every == 0 and state["step"] < total:
                t_val = time.time()
                m = _validate(accelerator, wrapper, renderer, trie, data, val_users, cfg, templates)
                state["valid_s"] = state.get("valid_s", 0.0) + time.time() - t_val
                if m is not None:
                    state["log"].append({"step": state["step"], "tokens": state["tokens"],
                                         "elapsed_s": round(time.time() - t_start, 1),
                                         "train_s": round(time.time() - t_start - state["valid_s"], 1),
                                         **{f"valid_{k}": v for k, v in m.items()}})
                    accelerator.log({f"valid/{k}": v for k, v in m.items()}, step=state["step"])
                    accelerator.print(f"step {state['step']}: validation {_fmt(m)}")
            state["elapsed_s"] = time.time() - t_start
            if cfg.train.save_every and state["step"] % cfg.train.save_every == 0 and state["step"] < total:
                save_checkpoint(out, accelerator, wrapper, optimizer, scheduler, state, cfg.train.keep_checkpoints)
            if state["step"] >= total:
                done = True
                break
        if not done:
            state["epoch"] += 1
            state["micro_in_epoch"] = 0
    bar.close()
    state["elapsed_s"] = time.time() - t_start
    accelerator.wait_for_everyone()

    in_sync = _replicas_in_sync(accelerator, wrapper)
    cold_info = text_info = None
    if text_rows is not None:  # every process: the replicas stay equal
        text_info = accelerator.unwrap_model(wrapper).text_rows.fold(accelerator.unwrap_model(wrapper).model)
        accelerator.print(f"item rows tied to their text: {text_info}")
    elif cfg.model.cold_rows and accelerator.is_main_process:
        cold_info = _cold_rows(cfg, accelerator.unwrap_model(wrapper).model, tok, id_tokens, new_ids, data)
        if cold_info is not None:
            accelerator.print(f"untrained items' rows from their text: {cold_info}")
    val = _validate(accelerator, wrapper, renderer, trie, data, val_users, cfg, templates)
    if trackers:
        accelerator.log({f"valid/{k}": v for k, v in (val or {}).items()}, step=state["step"])
        for tracker in accelerator.trackers:  # not end_training(): that also tears down the process group
            tracker.finish()
    if accelerator.is_main_process:
        train_info = {
            "steps": state["step"], "epochs_started": state["epoch"] + 1, "tokens": state["tokens"],
            "target_tokens": state["target_tokens"], "train_seconds": round(state["elapsed_s"], 1),
            "validation_seconds": round(state.get("valid_s", 0.0), 1),
            "tokens_per_s": round(state["tokens"] / max(state["elapsed_s"], 1e-9), 1),
            "final_loss": next((r["loss"] for r in reversed(state["log"]) if "loss" in r), None),
            "trainable_params": n_train, "total_params": n_total, "processes": world, "replicas_in_sync": in_sync,
            "cold_rows": cold_info, "text_rows": text_info,
            "device": str(accelerator.device), "start": start_info,
            "collaborative": collab.info if collab is not None else None, "log": state["log"],
        }
        unwrapped = accelerator.unwrap_model(wrapper)
        if unwrapped.fuser is not None:
            unwrapped.fuser.fold(unwrapped.model)  # the projected rows become the model's own item rows
        write_bundle(out, cfg, unwrapped.model, tok, data, index, trie, templates,
                     {"train": train_info, "valid": val}, renderer)
        accelerator.print(f"bundle written to {out}  (final loss {train_info['final_loss']}, "
                          f"{train_info['tokens_per_s']} tokens/s)")
    accelerator.wait_for_everyone()
    return out


def _cold_rows(cfg: RunConfig, peft_model, tok, id_tokens, new_ids, data: RecData) -> dict | None:
    """Items without training interactions get LM-head rows predicted from their text (cold_items.py), when
    every ID is one token of its own; ``None`` when the scheme has no per-item rows or none is untrained."""
    from generative_rec.cold_items import cold_rows, single_token_items

    tokens = single_token_items(id_tokens, new_ids)
    trained = np.asarray(data.train_counts) > 0
    if tokens is None or trained.all():
        return None
    return cold_rows(peft_model, tok, tokens, trained, data.texts, seed=cfg.train.seed)


def _text_features(cfg: RunConfig, model, tok, id_tokens, new_ids, data: RecData):
    """``(item tokens, item text features)`` for ``model.text_rows`` (features: the model's mean-pooled hidden
    states over each item text, before LoRA), or None when it is off. Needs one new token per item."""
    from generative_rec.cold_items import single_token_items as own_item_tokens
    from generative_rec.embeddings import item_text_embeddings

    if not cfg.model.text_rows:
        return None
    if not 0.0 < cfg.model.text_rows < 1.0:
        raise ConfigError(f"model.text_rows is the share of item rows dropped per step: it must be in [0, 1), "
                          f"not {cfg.model.text_rows}")
    tokens = own_item_tokens(id_tokens, new_ids)
    if tokens is None:
        raise ConfigError("model.text_rows needs one new token of its own per item (index.scheme: atomic)")
    return tokens.tolist(), item_text_embeddings(model, tok, data.texts, progress=False)


def _replicas_in_sync(accelerator, wrapper) -> bool:
    """With several processes, check that every replica ended with the same trainable weights."""
    if accelerator.num_processes == 1:
        return True
    model = accelerator.unwrap_model(wrapper)
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters() if p.requires_grad]).sum()
    sums = accelerator.gather(checksum.reshape(1).to(accelerator.device))
    ok = bool(torch.allclose(sums, sums[0].expand_as(sums), rtol=0, atol=1e-9))
    accelerator.print(f"replicas in sync: {ok} (trainable-weight checksums {sums.tolist()})")
    if not ok:
        raise RuntimeError("distributed replicas diverged: trainable weights differ between processes")
    return ok


def _fmt(m: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))


def _validate(accelerator, wrapper, renderer, trie, data, users, cfg: RunConfig, templates) -> dict | None:
    """Constrained top-K on a sample of validation users (main process); NDCG@10 etc."""
    from generative_rec.evaluation.llm import evaluate_llm

    if not accelerator.is_main_process:
        return None
    model = accelerator.unwrap_model(wrapper).model
    was_training = model.training
    model.eval()
    tpl = _inference_template(cfg, templates)
    res = evaluate_llm(model, renderer, trie, data, "valid", users, tpl, ks=[10], batch_size=cfg.eval.batch_size,
                       pad_id=renderer.tokenizer.pad_token_id, mask_history=cfg.eval.mask_history, progress=False)
    if was_training:
        model.train()
    return {k: v for k, v in res["metrics"].items() if isinstance(v, float)}


def _inference_template(cfg: RunConfig, templates: dict[str, list[Template]]) -> Template:
    allt = {t.key: t for ts in load_templates(cfg.prompts.dir).values() for t in ts}
    key = cfg.prompts.inference if "/" in cfg.prompts.inference else f"next_item/{cfg.prompts.inference}"
    if key not in allt:
        raise ConfigError(f"prompts.inference {key!r} is not a template (have {sorted(allt)})")
    return allt[key]


def write_bundle(out: Path, cfg: RunConfig, peft_model, tok, data: RecData, index, trie, templates, metrics,
                 renderer: Renderer) -> None:
    """Save adapter, merged model, tokenizer and the serving metadata into ``out`` (each part atomically)."""
    from generative_rec.bundle import write_bundle_files

    peft_model = peft_model.float() if next(peft_model.parameters()).dtype != torch.float32 else peft_model
    with atomic_dir(out / "adapter", overwrite=True) as tmp:
        peft_model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    if cfg.train.merge:
        merged = peft_model.merge_and_unload()
        with atomic_dir(out / "model", overwrite=True) as tmp:
            merged.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    allt = load_templates(cfg.prompts.dir)
    used = [t for ts in allt.values() for t in ts]  # trained ones and the held-out ones (for evaluation)
    inference = _inference_template(cfg, templates).key
    manifest = {
        "base_model": cfg.model.base, "scheme": index.scheme, "domain": data.meta.get("domain", "item"),
        "data": {"path": str(data.path), "name": data.name, "num_users": data.num_users,
                 "num_items": data.num_items},
        "new_tokens": len(index.new_tokens), "merged": cfg.train.merge,
        "trained_templates": [t.key for task, ts in templates.items() if cfg.prompts.tasks.get(task) for t in ts],
        "heldout_templates": [t.key for t in used if t.heldout],
        "max_history": cfg.prompts.max_history, **prompt_alignment(renderer),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_bundle_files(
        out, manifest=manifest, index=index, trie=trie, templates=used, inference_template=inference,
        catalogue={"item_ids": data.item_ids, "titles": data.titles, "texts": data.texts,
                   "attributes": data.attributes, "popularity": data.train_counts},
        config_yaml=to_yaml(cfg), metrics=metrics,
    )
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    shutil.rmtree(out / "work", ignore_errors=True)


def prompt_alignment(renderer: Renderer) -> dict:
    """The manifest's record of the training renderer's block-aligned prompts (``auto`` resolved;
    ``Bundle.renderer`` reads it back)."""
    return {"prompt_align": renderer.align, "prompt_filler": renderer.filler if renderer.align else None}


def config_dict(cfg: RunConfig) -> dict:
    return asdict(cfg)
