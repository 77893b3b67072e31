"""``genrec generate``: offline batch top-K through vLLM's ``LLM``, streamed to a JSONL file.

Input (JSONL, one user a line)::

    {"user_id": "u1", "history": ["50", "Star Wars (1977)", ...], "k": 10, "exclude_history": true}

``user_id`` names the user in the output (the 1-based line number when absent; ids must be unique);
``history`` holds item ids or exact titles, oldest first; ``k``, ``exclude_history``, ``exclude`` and
``num_beams`` are optional (defaults from the command line) and mean what they mean in
``POST /v1/recommendations`` — each line is resolved by the same code (``serving.prepare``) and decoded
by the same beam search with the same ``k`` and beam width, so batch and server give the same top-K.

Output (JSONL)::

    {"user_id": "u1", "items": [{"item_id": "...", "title": "...", "score": -4.93}, ...], "history_used": 20}

With ``--explain`` every item also gets ``"explanation"``: one line generated as ``"explain": true`` does in
the server — ``generative_rec.explain.contract``'s prompt (:func:`~generative_rec.explain.contract.explain_prompt_ids`) and
settings (:func:`~generative_rec.explain.contract.explain_settings`, greedy), cleaned by
:func:`~generative_rec.explain.contract.clean_explanation` — on the same engine, all the window's items in one
``generate`` call. Only bundles trained with the ``explain`` task can explain (checked before anything runs).

Lines are appended a window of users at a time (one ``write`` of whole lines, then ``fsync``). With
``--resume`` the users already in the output are skipped; a torn last line (a kill during a write) is cut
off first, so a killed run loses and duplicates nothing. With ``--skip-invalid`` a bad input line gives
``{"user_id": ..., "error": "..."}``; without it every bad line is reported before any decoding starts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from generative_rec.errors import ConfigError, DataError

if TYPE_CHECKING:  # imported lazily: `genrec --help` must not load torch / vLLM
    from generative_rec.decoding.beam import SearchStats
    from generative_rec.decoding.vllm_engine import EngineOptions
    from generative_rec.explain.contract import ExplainSettings

log = logging.getLogger(__name__)


@dataclass
class GenerateOptions:
    bundle: str
    input: str
    output: str
    k: int = 10
    num_beams: int | None = None
    exclude_history: bool = True
    batch_size: int = 64  # users decoded together (one beam search; all their beams share engine steps)
    resume: bool = False
    overwrite: bool = False
    skip_invalid: bool = False
    max_k: int | None = None
    explain: bool = False  # add a one-line "explanation" to every item (bundles trained with the explain task)
    engine: EngineOptions = field(default_factory=lambda: _engine_options())


def _engine_options():
    from generative_rec.decoding.vllm_engine import EngineOptions

    return EngineOptions()


@dataclass
class Job:
    user_id: str | int
    line: int
    prompt: list[int] | None = None
    exclude: list[int] | None = None
    history: list[int] | None = None  # catalogue rows of the whole history (explanations show the last few)
    used: int = 0
    k: int = 10
    num_beams: int | None = None
    error: str | None = None


# --------------------------------------------------------------------------- input / output files
def read_jobs(bundle, path: str | Path, o: GenerateOptions) -> list[Job]:
    """Parse and resolve every input line; bad lines carry ``error`` (the caller decides)."""
    from generative_rec.serving.request import RequestError, prepare

    jobs: list[Job] = []
    seen: dict = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            job = Job(user_id=n, line=n)
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise RequestError("a line must be a JSON object")
                job.user_id = rec.get("user_id", n)
                if not isinstance(job.user_id, (str, int)) or isinstance(job.user_id, bool):
                    raise RequestError("user_id must be a string or an integer")
                if job.user_id in seen:
                    raise RequestError(f"user_id {job.user_id!r} repeats line {seen[job.user_id]}")
                seen[job.user_id] = n
                hist = rec.get("history")
                if not isinstance(hist, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool)
                                                         for x in hist):
                    raise RequestError("history must be a list of item ids or titles")
                job.k = rec.get("k", o.k)
                job.num_beams = rec.get("num_beams", o.num_beams)
                excl_hist = rec.get("exclude_history", o.exclude_history)
                excl = rec.get("exclude", [])
                if not isinstance(job.k, int) or isinstance(job.k, bool):
                    raise RequestError("k must be an integer")
                if job.num_beams is not None and (not isinstance(job.num_beams, int) or job.num_beams < job.k):
                    raise RequestError("num_beams must be an integer >= k")
                if not isinstance(excl_hist, bool) or not isinstance(excl, list):
                    raise RequestError("exclude_history must be true/false and exclude a list")
                p = prepare(bundle, hist, job.k, excl_hist, excl, o.max_k)
                job.prompt, job.exclude, job.history, job.used = p.prompt, p.exclude, p.history, p.used
            except json.JSONDecodeError as e:
                job.error = f"malformed JSON: {e}"
            except RequestError as e:
                job.error = str(e)
            jobs.append(job)
    return jobs


def repair_and_read_done(path: Path, explain: bool | None = None) -> set:
    """User ids already written to ``path``; a torn (unterminated or unparsable) last line is cut off.

    ``explain`` (True/False): the resumed run's mode; a file written in the other mode is an error (its
    items would be with and without explanations)."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted run", path, len(data) - end)
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    done = set()
    for n, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            done.add(rec["user_id"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"not an output line of genrec generate ({e})", str(path), n) from None
        items = rec.get("items") or []
        if explain is not None and items and ("explanation" in items[0]) != explain:
            raise DataError("written " + ("without" if explain else "with") + " --explain; resume it the same "
                            "way (or --overwrite)", str(path), n)
    return done


def append_lines(path: Path, records: list[dict]) -> None:
    """Append whole lines in one write and fsync: a window is either on disk or (after repair) absent."""
    if not records:
        return
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(blob)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- decoding
def check_can_explain(bundle) -> None:
    """``--explain`` needs a bundle trained with the explain task (the server's rule for ``"explain": true``)."""
    from generative_rec.explain.contract import explanations_trained

    if not explanations_trained(bundle):
        raise ConfigError(f"--explain: {bundle.path} was not trained with the explain task (its config's "
                          "prompts.tasks has no `explain`, or no explain template was trained), so it cannot "
                          "explain; train with `explain` in prompts.tasks or drop --explain")


def decode_window(llm, bundle, jobs: list[Job], lora_request=None, stats: SearchStats | None = None,
                  explain: ExplainSettings | None = None) -> list[dict]:
    """Top-K for a window of users; users with the same (k, num_beams) share one beam search.

    ``explain``: also explain every item (one engine call for the whole window)."""
    from generative_rec.decoding.vllm_engine import llm_topk
    from generative_rec.explain.vllm import explain_window
    from generative_rec.serving.request import items_of

    out: dict[int, dict] = {}
    ranked: dict[int, list[int]] = {}  # catalogue rows, best first
    groups: dict[tuple, list[int]] = {}
    for j, job in enumerate(jobs):
        if job.error is not None:
            out[j] = {"user_id": job.user_id, "error": job.error}
        else:
            groups.setdefault((job.k, job.num_beams), []).append(j)
    for (k, nb), idx in groups.items():
        res = llm_topk(llm, bundle.trie, [jobs[j].prompt for j in idx], k, nb, [jobs[j].exclude for j in idx],
                       batch_size=len(idx), lora_request=lora_request, stats=stats, item_ids=bundle.item_ids,
                       catalogue_version=bundle.catalogue_version, hidden=bundle.hidden)
        for j, r in zip(idx, res, strict=True):
            out[j] = {"user_id": jobs[j].user_id, "items": items_of(bundle, r), "history_used": jobs[j].used}
            ranked[j] = [int(i) for i in r.items]
    if explain is not None:
        t0 = time.perf_counter()
        todo = [(j, n, row) for j in sorted(ranked) for n, row in enumerate(ranked[j])]
        texts = explain_window(llm, bundle, explain, [(jobs[j].history, row) for j, _, row in todo], lora_request)
        for (j, n, _), text in zip(todo, texts, strict=True):
            out[j]["items"][n]["explanation"] = text
        if stats is not None:
            stats.extra["explain_s"] = stats.extra.get("explain_s", 0.0) + time.perf_counter() - t0
            stats.extra["explanations"] = stats.extra.get("explanations", 0) + len(todo)
    return [out[j] for j in range(len(jobs))]


def generate(o: GenerateOptions, llm=None, progress: bool = True,
             on_window: Callable[[int], None] | None = None) -> dict:
    """Run a batch job; returns a summary. ``llm``: an already open engine for this bundle (tests)."""
    from tqdm.auto import tqdm

    from generative_rec.bundle import Bundle
    from generative_rec.decoding.beam import SearchStats
    from generative_rec.decoding.vllm_engine import lora_request_for, open_llm

    bundle = Bundle(o.bundle)
    settings = None
    if o.explain:  # fail before touching the output or starting an engine
        from generative_rec.explain.contract import explain_settings

        check_can_explain(bundle)
        settings = explain_settings(bundle)
    out = Path(o.output)
    if out.exists() and not (o.resume or o.overwrite):
        raise FileExistsError(f"{out} exists (pass --resume to continue it or --overwrite to start again)")
    if out.exists() and o.overwrite and not o.resume:
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = repair_and_read_done(out, o.explain) if o.resume else set()
    jobs = read_jobs(bundle, o.input, o)
    bad = [j for j in jobs if j.error is not None]
    if bad and not o.skip_invalid:
        lines = "; ".join(f"line {j.line}: {j.error}" for j in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DataError(f"{len(bad)} invalid line(s): {lines}{more} — fix them or pass --skip-invalid",
                        str(o.input))
    pending = [j for j in jobs if j.user_id not in done]
    summary = {"users": len(jobs), "skipped_done": len(jobs) - len(pending), "written": 0, "invalid": len(bad),
               "seconds": 0.0}
    if not pending:
        return summary
    own = llm is None
    if own:
        from dataclasses import replace

        from generative_rec.decoding.topk import max_width
        from generative_rec.decoding.vllm_processor import LOGPROBS_EXTRA

        # the engine must return the widest top-W any line needs (decoding.topk.needed_width), plus one
        need = max((max_width(bundle.trie, j.k, max(j.k, j.num_beams or j.k)) for j in pending if j.error is None),
                   default=1)
        llm = open_llm(bundle, replace(o.engine, max_logprobs=max(o.engine.max_logprobs, need + LOGPROBS_EXTRA)))
    lora = lora_request_for(bundle, o.engine)
    stats = SearchStats()
    t0 = time.perf_counter()
    bar = tqdm(total=len(pending), desc="generate", unit="user", disable=not progress, dynamic_ncols=True)
    try:
        for w, lo in enumerate(range(0, len(pending), o.batch_size)):
            window = pending[lo: lo + o.batch_size]
            append_lines(out, decode_window(llm, bundle, window, lora, stats, settings))
            summary["written"] += len(window)
            bar.update(len(window))
            if on_window is not None:
                on_window(w)
    finally:
        bar.close()
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        summary["decode"] = {"steps": stats.steps, "rows": stats.rows, "model_s": round(stats.model_seconds, 2),
                             "mask_s": round(stats.mask_seconds, 2),
                             "engine_requests": stats.extra.get("requests", 0)}
        if o.explain:
            summary["explain"] = {"explanations": stats.extra.get("explanations", 0),
                                  "seconds": round(stats.extra.get("explain_s", 0.0), 2)}
        if own:
            from generative_rec.decoding.vllm_engine import close_llm

            close_llm(llm)
    return summary
