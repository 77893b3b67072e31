"""Prompt templates (files in ``prompts/``) and their rendering into token ids with loss labels.

Rendering works on *segments*: literal template text, item IDs and titles are tokenised separately and
concatenated, so an item's ID is always the same token-id sequence — in training targets, in history
context, in the trie, and at serving time. ``labels`` are -100 everywhere except on target tokens.

**Block-aligned prompts** (``prompts.align``, recorded in the bundle manifest): with ``align = A > 0`` the
next-item inference prompt gets ``(-len(prompt)) % A`` *filler* tokens right after the tokenizer's BOS
(at the very start when it has none), so the item ID always begins on an ``A``-token boundary. With ``A``
equal to the engine's KV block size (vLLM on CPU: 32) every beam request ``prompt + ID prefix`` finds the
whole prompt in the prefix cache instead of recomputing its last partial block. The filler is
:func:`filler_token`. Packed sequence examples cannot align every position at once; each gets a random
filler count in ``[0, A)`` from the task's seeded rng, so the model learns that leading fillers carry
nothing. Single-item tasks (item title, explanations) are never aligned, in training or at inference.
The default, ``align: auto`` (:func:`resolve_align`), aligns to :data:`KV_BLOCK` exactly when item IDs take
more than one token: one-token IDs are scored in one request whatever the prompt, so they gain nothing.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from generative_rec.errors import ConfigError
from generative_rec.paths import repo_root
from generative_rec.plain_text import plain_ids

KV_BLOCK = 32  # the KV-cache block of the engines genrec opens (vLLM's CPU attention needs multiples of 32)


def resolve_align(align: int | str, multi_token: bool) -> int:
    """The prompt alignment a run uses: ``prompts.align`` as given, or for ``"auto"`` :data:`KV_BLOCK` when
    item IDs take several tokens (``multi_token``) and 0 otherwise."""
    if align == "auto":
        return KV_BLOCK if multi_token else 0
    if not isinstance(align, int) or isinstance(align, bool) or align < 0:
        raise ConfigError(f"prompts.align must be 'auto' or an integer >= 0 (0: off), not {align!r}")
    return align

IGNORE = -100
_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Template:
    task: str
    name: str
    prompt: str
    item: str = "{id}"
    sep: str = ", "
    target: str = "{id}"
    heldout: bool = False

    @property
    def key(self) -> str:
        return f"{self.task}/{self.name}"

    @property
    def sequence_capable(self) -> bool:
        """True when the prompt ends with {history}: the next item continues the list."""
        return self.task == "next_item" and self.prompt.endswith("{history}")


def default_prompts_dir() -> Path:
    return repo_root() / "prompts"


def load_templates(directory: str | Path | None = None) -> dict[str, list[Template]]:
    """Read every ``*.yaml`` in ``directory``: task -> templates (held-out ones included, flagged)."""
    directory = Path(directory) if directory else default_prompts_dir()
    if not directory.is_dir():
        raise ConfigError(f"prompt folder not found: {directory}")
    out: dict[str, list[Template]] = {}
    for f in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or "task" not in doc or "templates" not in doc:
            raise ConfigError(f"{f}: a prompt file needs 'task' and 'templates'")
        task = doc["task"]
        names = set()
        for t in doc["templates"]:
            try:
                tpl = Template(task=task, **t)
            except TypeError as e:
                raise ConfigError(f"{f}: bad template {t.get('name', t)!r}: {e}") from None
            if tpl.name in names:
                raise ConfigError(f"{f}: template name {tpl.name!r} repeats")
            names.add(tpl.name)
            _validate(tpl, f)
            out.setdefault(task, []).append(tpl)
    return out


def _validate(t: Template, f: Path) -> None:
    allowed = {"next_item": {"history", "domain", "domains"}}.get(t.task, {"id", "title", "domain", "domains", "history", "reason", "target_title"})
    for name in _FIELD.findall(t.prompt):
        if name not in allowed:
            raise ConfigError(f"{f}: template {t.name!r} uses unknown placeholder {{{name}}}")
    if t.task == "next_item" and t.prompt.count("{history}") != 1:
        raise ConfigError(f"{f}: next_item template {t.name!r} needs exactly one {{history}}")


def templates_from_dicts(dicts: list[dict]) -> list[Template]:
    return [Template(**d) for d in dicts]


def templates_to_dicts(templates: Sequence[Template]) -> list[dict]:
    return [asdict(t) for t in templates]


class Renderer:
    """Turns templates + items into token ids. Knows the tokenizer, the item IDs and the item titles.

    ``id_tokens[i]`` is item ``i``'s ID as token ids (exactly what the trie holds). ``align``: next-item
    prompts are padded with ``filler`` (default :func:`filler_token`) to a multiple of ``align`` tokens
    (0: never; ``"auto"``: :func:`resolve_align` over these IDs; see the module docstring).
    """

    def __init__(self, tokenizer, id_tokens: Sequence[Sequence[int]], titles: Sequence[str],
                 domain: str = "item", extra: dict[str, Sequence[str]] | None = None, align: int | str = 0,
                 filler: int | None = None):
        self.tokenizer = tokenizer
        self.id_tokens = [list(t) for t in id_tokens]
        self.titles = list(titles)
        self.domain = domain
        self.extra = extra or {}
        self._cache: dict[str, list[int]] = {}
        self._title_cache: dict[int, list[int]] = {}
        self.bos = self._special_prefix()
        self.eos = tokenizer.eos_token_id
        self.align = resolve_align(align, any(len(t) > 1 for t in self.id_tokens))
        self.filler = (filler if filler is not None else filler_token(tokenizer)) if self.align else filler

    def _special_prefix(self) -> list[int]:
        ids = self.tokenizer("x", add_special_tokens=True)["input_ids"]
        plain = self.tokenizer("x", add_special_tokens=False)["input_ids"]
        return list(ids[: len(ids) - len(plain)]) if ids[-len(plain):] == plain else []

    def text(self, s: str) -> list[int]:
        """``s`` as plain text (a title that spells an item token or the EOS string stays text)."""
        if s not in self._cache:
            self._cache[s] = plain_ids(self.tokenizer, s)
        return self._cache[s]

    def title(self, item: int) -> list[int]:
        if item not in self._title_cache:
            self._title_cache[item] = self.text(self.titles[item])
        return self._title_cache[item]

    # --------------------------------------------------------------- pieces
    def _fill(self, fmt: str, item: int | None = None, history: Sequence[int] | None = None,
              t: Template | None = None, targets: set[str] = frozenset(), **values: str) -> tuple[list[int], list[int]]:
        """Render ``fmt``; placeholders named in ``targets`` get labels, everything else -100."""
        ids: list[int] = []
        labels: list[int] = []
        pos = 0
        for m in _FIELD.finditer(fmt):
            lit = fmt[pos: m.start()]
            if lit:
                seg = self.text(lit)
                ids += seg
                labels += [IGNORE] * len(seg)
            name = m.group(1)
            if name == "id":
                seg = self.id_tokens[item]
            elif name == "title":
                seg = self.title(item)
            elif name == "history":
                seg = self.history(t, history)
            elif name == "domain":
                seg = self.text(self.domain)
            elif name == "domains":
                seg = self.text(plural(self.domain))
            elif name in values:
                seg = self.text(values[name])
            else:
                raise ConfigError(f"no value for placeholder {{{name}}}")
            ids += seg
            labels += seg if name in targets else [IGNORE] * len(seg)
            pos = m.end()
        lit = fmt[pos:]
        if lit:
            seg = self.text(lit)
            ids += seg
            labels += [IGNORE] * len(seg)
        return ids, labels

    def item_text(self, t: Template, item: int) -> list[int]:
        return self._fill(t.item, item=item)[0]

    def history(self, t: Template, history: Sequence[int]) -> list[int]:
        sep = self.text(t.sep)
        out: list[int] = []
        for n, i in enumerate(history):
            if n:
                out += sep
            out += self.item_text(t, int(i))
        return out

    # --------------------------------------------------------------- next-item task
    def prompt_ids(self, t: Template, history: Sequence[int]) -> list[int]:
        """The inference prompt for a history; generation continues with the next item's ID."""
        ids, _ = self._fill(t.prompt, history=history, t=t)
        if t.sequence_capable and len(history):
            ids = ids + self.text(t.sep)
        return self.bos + self.fillers(self.align_fill(len(self.bos) + len(ids))) + ids

    def align_fill(self, length: int) -> int:
        """How many fillers a next-item prompt of ``length`` tokens gets: ``(-length) % align`` (0 when off)."""
        return (-length) % self.align if self.align else 0

    def fillers(self, n: int) -> list[int]:
        return [self.filler] * n if n else []

    def next_item_example(self, t: Template, history: Sequence[int], target: int) -> tuple[list[int], list[int]]:
        """One (prompt, target) pair; loss on the target ID (and EOS for templates that end there)."""
        prompt = self.prompt_ids(t, history)
        tgt = list(self.id_tokens[target])
        ids = prompt + tgt
        labels = [IGNORE] * len(prompt) + tgt
        if not t.sequence_capable and self.eos is not None:
            ids.append(self.eos)
            labels.append(self.eos)
        return ids, labels

    def sequence_example(self, t: Template, seq: Sequence[int], min_context: int = 1,
                         fill: int = 0) -> tuple[list[int], list[int]]:
        """A whole sequence in one pass: loss on the ID of every item after the first ``min_context``.

        Position j's ID is predicted from exactly the prompt ``prompt_ids(t, seq[:j])`` — the same
        context the model sees at inference — because the template's prompt ends with the history; with
        ``align`` on, the prompt shows ``fill`` leading fillers instead (the task draws it in ``[0, align)``).
        """
        if not t.sequence_capable:
            raise ValueError(f"template {t.key} is not sequence-capable (text follows {{history}})")
        head = t.prompt[: -len("{history}")]
        ids, _ = self._fill(head, t=t)
        ids = self.bos + self.fillers(fill) + ids
        labels = [IGNORE] * len(ids)
        sep = self.text(t.sep)
        for n, item in enumerate(seq):
            if n:
                ids += sep
                labels += [IGNORE] * len(sep)
            seg_ids, seg_labels = self._fill(t.item, item=int(item), targets={"id"} if n >= min_context else set())
            ids += seg_ids
            labels += seg_labels
        return ids, labels

    # --------------------------------------------------------------- other tasks
    def item_prompt_ids(self, t: Template, item: int, history: Sequence[int] | None = None, **values: str) -> list[int]:
        """The prompt of a single-item task (for generation): everything before ``t.target``."""
        return self.bos + self._fill(t.prompt, item=item, history=history or [], t=t, **values)[0]

    def item_example(self, t: Template, item: int, history: Sequence[int] | None = None,
                     **values: str) -> tuple[list[int], list[int]]:
        """A single-item task (ID <-> title alignment, explanation, ...): loss on ``t.target`` and EOS.

        ``history`` fills a ``{history}`` placeholder (items shown with ``t.item``, joined by ``t.sep``);
        other placeholders come from ``values`` (e.g. ``reason``)."""
        p_ids, _ = self._fill(t.prompt, item=item, history=history or [], t=t, **values)
        tgt_ids, _ = self._fill(t.target, item=item, history=history or [], t=t, **values)
        ids = self.bos + p_ids + tgt_ids
        labels = [IGNORE] * (len(self.bos) + len(p_ids)) + list(tgt_ids)
        if self.eos is not None:
            ids.append(self.eos)
            labels.append(self.eos)
        return ids, labels


def filler_token(tokenizer) -> int:
    """The token block-aligned prompts start with: the tokenizer's ``<|endoftext|>`` when its vocabulary has
    one — the separator GPT-2-style pretraining puts between documents (SmolLM2's id 0), so a run of them
    reads as "previous documents ended" — otherwise its EOS token."""
    tid = tokenizer.get_vocab().get("<|endoftext|>")
    if tid is None:
        tid = tokenizer.eos_token_id
    if tid is None:
        raise ConfigError("prompts.align needs a filler token: the tokenizer has neither <|endoftext|> nor an EOS")
    return int(tid)


def plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def pick(templates: Sequence[Template], rng: random.Random, include_heldout: bool = False) -> Template:
    pool = [t for t in templates if include_heldout or not t.heldout]
    return pool[rng.randrange(len(pool))]
