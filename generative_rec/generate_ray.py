"""``genrec generate --engine ray``: the batch job on a Ray cluster, one vLLM engine per Ray Data actor.

The single-engine job (:mod:`generative_rec.generate`) decodes every user on one ``vllm.LLM``. This module
spreads the same job over many engines with Ray Data — the route vLLM documents for distributed offline
inference — and adds no scheduler of its own:

1. **Plan** (driver). The input is a JSONL or Parquet file, a folder of them, or a glob. Every file is one
   or more *shards*: a JSONL file longer than ``shard_users`` lines is cut into line ranges
   (``part.jsonl`` -> ``part-00000``, ``part-00001``, ...), a Parquet file is one shard. A shard is the unit
   of work, of output and of resume.
2. **Check** (Ray Data tasks, no engine). Every shard is parsed and resolved by the single path's own
   :func:`~generative_rec.generate.read_jobs` (so user ids default to the line number in the file, as there).
   Bad lines without ``--skip-invalid`` and user ids that repeat across shards are errors here, before any
   engine starts; the widest top-W a user needs sizes the engines' ``max_logprobs``.
3. **Decode** (a Ray Data actor pool, ``ActorPoolStrategy(size=workers)``). Each actor opens ONE vLLM engine
   (:func:`~generative_rec.decoding.vllm_engine.open_llm`, ``num_gpus`` per actor when the cluster has
   GPUs, else ``num_cpus``) and runs :func:`~generative_rec.generate.generate` — the single-engine job
   itself: same validation, windows, constrained top-K, ``--explain`` and ``--skip-invalid`` — on one shard at
   a time, into a temporary file that is renamed into place once complete (JSONL, or Parquet on request).
4. **Record** (driver). Each finished shard gets a line in ``_manifest.jsonl`` (fsync'd), with the
   fingerprint (SHA-1) of the input it was made from.

Failures: a killed actor is restarted by Ray (``max_restarts``) and its shard is retried
(``max_task_retries``) from the start; an attempt leaves at most a temporary file, never a partial output,
so no user is lost or written twice. ``--resume`` skips the shards that the manifest lists with the same
input fingerprint and whose output file holds the recorded number of records; all other shards are
decoded again (a shard is all or nothing). Run settings live in ``_run.json``; resuming with other
settings is refused.

Output folder::

    out/part-00000.jsonl   # one per input shard, same records as `genrec generate` writes
    out/_manifest.jsonl    # one line per finished shard
    out/_run.json          # the run's settings (checked by --resume)

On a multi-machine cluster the input, the output folder and the bundle must be at the same path on every
node (a shared file system), and generative_rec installed in the nodes' Python; see docs/cluster.md.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generative_rec.errors import ConfigError, DataError

if TYPE_CHECKING:
    from generative_rec.generate import GenerateOptions

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
MANIFEST = "_manifest.jsonl"
RUN_FILE = "_run.json"
TMP_MARK = ".tmp-"
# Test hook: the first actor to finish a window while this file does not exist creates it (with its pid)
# and SIGKILLs itself — a worker killed mid-shard, at a reproducible moment.
KILL_ENV = "GENREC_RAY_TEST_KILL_MARKER"
# Settings that must not change between a run and its --resume (they change what a shard's output holds).
RUN_KEYS = ("k", "num_beams", "exclude_history", "max_k", "explain")


@dataclass
class RayOptions:
    workers: int = 2  # actors, each with one vLLM engine
    address: str | None = None  # None: start a local Ray instance; "auto" / "HOST:PORT" / "ray://...": connect
    cpus_per_worker: float = 1.0  # Ray CPUs per actor (CPU engines: also their OpenMP threads)
    gpus_per_worker: float | None = None  # None: tensor_parallel_size GPUs when the cluster has GPUs, else 0
    output_format: str = "jsonl"  # jsonl | parquet
    shard_users: int = 10_000  # JSONL input files are cut into shards of at most this many lines
    max_restarts: int = 3  # per actor: restarts after its process dies
    max_task_retries: int = 3  # per shard: retries on a restarted actor
    object_store_gb: float = 1.0  # a local instance's object store (shards travel as names, not data)
    check_on_driver: int = 20_000  # inputs of at most this many lines are checked in the driver, larger by Ray


@dataclass
class Shard:
    name: str  # output file stem, unique in the run
    path: str  # input file
    format: str  # jsonl | parquet
    first_line: int = 1  # 1-based line (JSONL) of the shard's first line in its file; Parquet: 1
    lines: int = 0  # lines (JSONL, blank ones included) or rows (Parquet)
    byte_start: int = 0  # JSONL: the shard's bytes in the file
    byte_end: int = -1  # -1: to the end


# --------------------------------------------------------------------------- planning (driver)
def input_format(path: Path) -> str:
    return "parquet" if path.suffix.lower() in PARQUET_SUFFIXES else "jsonl"


def input_files(spec: str) -> list[Path]:
    """The input files: ``spec`` itself, the JSONL/Parquet files of a folder (not its ``_``/``.`` files), or a glob."""
    p = Path(spec)
    ok = JSONL_SUFFIXES + PARQUET_SUFFIXES
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in ok and f.name[0] not in "_.")
    elif any(c in spec for c in "*?["):
        files = sorted(Path(f) for f in glob.glob(spec) if Path(f).is_file())
    elif p.is_file():
        files = [p]
    else:
        raise DataError("no such file or folder", spec)
    if not files:
        raise DataError(f"no input files (a folder's *{', *'.join(ok)} files, or a glob)", spec)
    return [f.resolve() for f in files]


def _jsonl_ranges(path: Path, shard_users: int) -> list[tuple[int, int, int, int]]:
    """``(first_line, lines, byte_start, byte_end)`` of each run of ``shard_users`` lines."""
    ranges, first, n, start, pos = [], 1, 0, 0, 0
    with open(path, "rb") as f:
        for line in f:
            pos += len(line)
            n += 1
            if n == shard_users:
                ranges.append((first, n, start, pos))
                first, n, start = first + n, 0, pos
    if n or not ranges:
        ranges.append((first, n, start, pos))
    return ranges


def plan_shards(files: list[Path], shard_users: int) -> list[Shard]:
    if shard_users < 1:
        raise ConfigError("--shard-users must be at least 1")
    shards: list[Shard] = []
    for f in files:
        if input_format(f) == "parquet":
            import pyarrow.parquet as pq

            shards.append(Shard(f.stem, str(f), "parquet", lines=pq.ParquetFile(f).metadata.num_rows))
            continue
        ranges = _jsonl_ranges(f, shard_users)
        for i, (first, n, lo, hi) in enumerate(ranges):
            name = f.stem if len(ranges) == 1 else f"{f.stem}-{i:05d}"
            shards.append(Shard(name, str(f), "jsonl", first, n, lo, hi))
    names: dict[str, str] = {}
    for s in shards:
        if s.name in names:
            raise DataError(f"two input shards would write {s.name}.*: {names[s.name]} and {s.path} (input file "
                            "names must differ in more than their folder or suffix)")
        names[s.name] = s.path
    return shards


# --------------------------------------------------------------------------- shard input (any process)
def shard_bytes(s: Shard) -> bytes:
    with open(s.path, "rb") as f:
        if s.format == "parquet":
            return f.read()
        f.seek(s.byte_start)
        return f.read() if s.byte_end < 0 else f.read(s.byte_end - s.byte_start)


def fingerprint(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@contextlib.contextmanager
def shard_input(s: Shard, data: bytes):
    """A JSONL file ``read_jobs`` reads as the shard, with the line numbers of the original file.

    A whole JSONL file is read in place; a line range is copied behind ``first_line - 1`` blank lines (which
    ``read_jobs`` counts and skips); Parquet rows become JSONL lines (null columns dropped, so an absent
    ``k`` takes the default as an absent JSON key does)."""
    if s.format == "jsonl" and s.byte_start == 0 and s.byte_end in (-1, os.path.getsize(s.path)):
        yield s.path
        return
    d = tempfile.mkdtemp(prefix="genrec-shard-")
    try:
        path = Path(d) / f"{s.name}.jsonl"
        if s.format == "parquet":
            import io

            import pyarrow.parquet as pq

            rows = pq.read_table(io.BytesIO(data)).to_pylist()
            text = "".join(json.dumps({k: v for k, v in r.items() if v is not None}, ensure_ascii=False) + "\n"
                           for r in rows)
            path.write_text(text, encoding="utf-8")
        else:
            path.write_bytes(b"\n" * (s.first_line - 1) + data)
        yield str(path)
    finally:
        shutil.rmtree(d, ignore_errors=True)


_BUNDLES: dict[str, Any] = {}


def _bundle(path: str):
    from generative_rec.bundle import Bundle

    if path not in _BUNDLES:
        _BUNDLES[path] = Bundle(path)
    return _BUNDLES[path]


def check_shard(s: Shard, o: GenerateOptions) -> dict:
    """Parse and resolve a shard (no engine): ids, bad lines and the widest top-W its users need."""
    from generative_rec.decoding.topk import max_width
    from generative_rec.generate import read_jobs

    bundle = _bundle(o.bundle)
    data = shard_bytes(s)
    with shard_input(s, data) as path:
        jobs = read_jobs(bundle, path, o)
    width = max((max_width(bundle.trie, j.k, max(j.k, j.num_beams or j.k)) for j in jobs if j.error is None),
                default=1)
    # ids for the duplicate check; a bad line's id that is only its line number (no id read) does not count
    ids = [[j.user_id, j.line] for j in jobs if j.error is None or j.user_id != j.line]
    return {"name": s.name, "fingerprint": fingerprint(data), "users": len(jobs), "ids": ids, "width": width,
            "bad": [[j.line, j.error] for j in jobs if j.error is not None]}


def _check_batch(batch, o_json: str):
    """Ray Data batch function: rows ``{"shard": json}`` -> ``{"result": json of check_shard}``."""
    import numpy as np

    o = _options_from_json(o_json)
    return {"result": np.array([json.dumps(check_shard(Shard(**json.loads(x)), o)) for x in batch["shard"]])}


# --------------------------------------------------------------------------- options across processes
def _options_to_json(o: GenerateOptions) -> str:
    return json.dumps(asdict(o))


def _options_from_json(s: str) -> GenerateOptions:
    from generative_rec.decoding.vllm_engine import EngineOptions
    from generative_rec.generate import GenerateOptions

    d = json.loads(s)
    d["engine"] = EngineOptions(**d["engine"])
    return GenerateOptions(**d)


# --------------------------------------------------------------------------- output files
def output_path(out: Path, name: str, fmt: str) -> Path:
    return out / f"{name}.{fmt}"


def count_records(path: Path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def jsonl_to_parquet(src: Path, dst: Path) -> None:
    """The shard's records as a Parquet table (columns: the union of the records' keys)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [json.loads(x) for x in src.read_text(encoding="utf-8").splitlines() if x.strip()]
    cols: dict[str, None] = {"user_id": None}
    for r in recs:
        cols.update(dict.fromkeys(r))
    try:
        table = pa.table({c: [r.get(c) for r in recs] for c in cols}) if recs else pa.table({"user_id": pa.array([], pa.string())})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataError(f"cannot write the records as Parquet ({e}); user ids of one type per shard, or "
                        "--output-format jsonl", str(src)) from None
    pq.write_table(table, dst)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        _fsync_file(path)


def read_manifest(out: Path) -> dict[str, dict]:
    """Finished shards by name; a torn last line (a kill during the append) is cut off."""
    path = out / MANIFEST
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: cutting a torn last line left by an interrupted run", path)
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    done = {}
    for n, line in enumerate(data[:end].splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
                done[rec["shard"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"not a manifest line ({e})", str(path), n) from None
    return done


def is_done(out: Path, s: Shard, entry: dict | None, fp: str, fmt: str) -> bool:
    if entry is None:
        return False
    path = output_path(out, s.name, fmt)
    if entry.get("fingerprint") != fp:
        log.warning("shard %s: its input changed since it was written; decoding it again", s.name)
        return False
    if not path.exists() or count_records(path) != entry.get("records"):
        log.warning("shard %s: %s is missing or incomplete; decoding it again", s.name, path.name)
        return False
    return True


def run_settings(o: GenerateOptions, ro: RayOptions) -> dict:
    d = {k: getattr(o, k) for k in RUN_KEYS}
    d.update(bundle=str(Path(o.bundle).resolve()), output_format=ro.output_format, shard_users=ro.shard_users)
    return d


def check_output(out: Path, o: GenerateOptions) -> None:
    """An existing, non-empty output folder needs ``resume`` or ``overwrite`` (nothing is touched yet)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--engine ray writes a folder of shards; {out} is a file")
    if out.exists() and any(out.iterdir()) and not (o.resume or o.overwrite):
        raise FileExistsError(f"{out} is not empty (pass --resume to continue it or --overwrite to start again)")


def prepare_output(out: Path, o: GenerateOptions, ro: RayOptions, shards: list[Shard]) -> None:
    """Clear (``overwrite``: this job's files only) or check (``resume``) the output folder; write ``_run.json``."""
    from generative_rec.io import atomic_write_json, read_json

    settings = run_settings(o, ro)
    if out.exists() and o.overwrite and not o.resume:
        ours = [output_path(out, s.name, f) for s in shards for f in ("jsonl", "parquet")]
        for p in [out / MANIFEST, out / RUN_FILE, *ours]:
            p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob(f".*{TMP_MARK}*"):  # attempts of an interrupted run
        p.unlink(missing_ok=True)
    if o.resume and (out / RUN_FILE).exists():
        old = read_json(out / RUN_FILE)
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            raise ConfigError(f"--resume: {out} was written with other settings "
                              f"({', '.join(f'{k}: {a!r} then, {b!r} now' for k, (a, b) in diff.items())}); "
                              "resume with the same ones or pass --overwrite")
    atomic_write_json(out / RUN_FILE, settings)


def append_manifest(out: Path, rec: dict) -> None:
    from generative_rec.generate import append_lines

    append_lines(out / MANIFEST, [rec])


# --------------------------------------------------------------------------- the actor
class ShardDecoder:
    """A Ray Data actor: one vLLM engine, then :func:`~generative_rec.generate.generate` on a shard a call."""

    def __init__(self, o_json: str, out: str, fmt: str):
        from generative_rec.decoding.vllm_engine import open_llm

        self.o = _options_from_json(o_json)
        self.out, self.fmt = Path(out), fmt
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        t0 = time.perf_counter()
        self.llm = open_llm(_bundle(self.o.bundle), self.o.engine)
        self.engine_s = round(time.perf_counter() - t0, 2)
        log.info("genrec: %s opened its engine in %.1f s", self.worker, self.engine_s)

    def __call__(self, batch):
        import numpy as np

        return {"result": np.array([json.dumps(self.decode(Shard(**json.loads(x)))) for x in batch["shard"]])}

    def decode(self, s: Shard) -> dict:
        from generative_rec.generate import generate

        data = shard_bytes(s)
        final = output_path(self.out, s.name, self.fmt)
        tmp = self.out / f".{s.name}{TMP_MARK}{uuid.uuid4().hex[:12]}.jsonl"
        try:
            with shard_input(s, data) as inp:
                summary = generate(replace(self.o, input=inp, output=str(tmp), resume=False, overwrite=False),
                                   llm=self.llm, progress=False, on_window=_kill_hook)
            tmp.touch()  # a shard of blank lines writes nothing: its output is an empty file
            records = count_records(tmp)
            if self.fmt == "parquet":
                pq_tmp = tmp.with_suffix(".parquet")
                jsonl_to_parquet(tmp, pq_tmp)
                tmp.unlink()
                tmp = pq_tmp
            _fsync_file(tmp)
            os.replace(tmp, final)  # the shard's output appears whole, or not at all
            _fsync_dir(self.out)
        finally:
            for p in (tmp, tmp.with_suffix(".parquet")):
                p.unlink(missing_ok=True)
        return {"shard": s.name, "output": final.name, "fingerprint": fingerprint(data), "records": records,
                "users": summary["users"], "invalid": summary["invalid"], "seconds": summary["seconds"],
                "worker": self.worker, "engine_s": self.engine_s}


def _kill_hook(window: int) -> None:
    marker = os.environ.get(KILL_ENV)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.fsync(fd)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- Ray
def actor_env(ro: RayOptions, gpus: float) -> dict[str, str]:
    """Environment of the actors: few threads per CPU engine, quiet vLLM logs (unless set otherwise)."""
    env = {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "ERROR"),
           "TOKENIZERS_PARALLELISM": "false"}
    if not gpus:
        threads = str(max(1, int(ro.cpus_per_worker)))
        # Ray reserves CPUs but pins nothing: let the OS place each engine's threads instead of vLLM binding
        # every engine of a node to the same cores; and run the engine core inside the actor, so that a killed
        # actor takes its engine with it (nothing is orphaned) and the restarted one starts clean.
        env.update(OMP_NUM_THREADS=threads, VLLM_CPU_OMP_THREADS_BIND=os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
                   VLLM_ENABLE_V1_MULTIPROCESSING=os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"))
    return env


def forwarded_env() -> dict[str, str]:
    """The driver's settings the workers need on a remote cluster (they do not inherit its environment)."""
    keep = ("GENREC_", "VLLM_", "HF_", "TRANSFORMERS_")
    return {k: v for k, v in os.environ.items() if k.startswith(keep)}


def start_ray(ro: RayOptions) -> bool:
    """Connect to ``ro.address`` or start a local instance; True when this call started or connected Ray."""
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = dict(logging_level=logging.WARNING, runtime_env={"env_vars": forwarded_env()})
    if ro.address:
        ray.init(address=ro.address, **kw)
    else:
        cpus = max(os.cpu_count() or 1, int(ro.workers * ro.cpus_per_worker + 0.999))
        # "local": always a new instance, even where `ray start` runs a cluster (that one needs --ray-address auto)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                 object_store_memory=int(ro.object_store_gb * 2**30), **kw)
    return True


def _data_context(ro: RayOptions):
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver prints a line per finished shard instead
    ctx.print_on_execution_start = False
    ctx.max_consecutive_actor_init_deaths = ro.max_restarts  # an actor killed while opening its engine
    return ctx


def _shard_rows(shards: list[Shard]):
    import ray.data

    return ray.data.from_items([{"shard": json.dumps(asdict(s))} for s in shards], override_num_blocks=len(shards))


def check_all(shards: list[Shard], o: GenerateOptions) -> dict[str, dict]:
    """Ray Data tasks: :func:`check_shard` on every shard."""
    rows = _shard_rows(shards).map_batches(_check_batch, batch_size=1, num_cpus=1,
                                            fn_kwargs={"o_json": _options_to_json(o)}).take_all()
    return {r["name"]: r for r in (json.loads(x["result"]) for x in rows)}


def validate(shards: list[Shard], checks: dict[str, dict], skip_invalid: bool) -> None:
    """Bad lines (without --skip-invalid) and user ids in two shards: errors before any decoding."""
    bad = [(s.path, line, err) for s in shards for line, err in checks[s.name]["bad"]]
    if bad and not skip_invalid:
        lines = "; ".join(f"{Path(p).name} line {n}: {e}" for p, n, e in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DataError(f"{len(bad)} invalid line(s): {lines}{more} — fix them or pass --skip-invalid")
    seen: dict[Any, tuple[str, int]] = {}
    dups = []
    for s in shards:
        mine = set()
        for uid, line in checks[s.name]["ids"]:
            key = (type(uid).__name__, uid)
            if key in seen and key not in mine:
                dups.append(f"user_id {uid!r} in {Path(seen[key][0]).name} line {seen[key][1]} and "
                            f"{Path(s.path).name} line {line}")
            else:
                seen[key] = (s.path, line)
            mine.add(key)
    if dups:
        more = f" (and {len(dups) - 5} more)" if len(dups) > 5 else ""
        raise DataError(f"{len(dups)} user id(s) repeat across shards: {'; '.join(dups[:5])}{more} (a line without "
                        "user_id is named by its line number in its file: give every line a user_id)")


def generate_ray(o: GenerateOptions, ro: RayOptions, progress: bool = True) -> dict:
    """Run the batch job on Ray; returns a summary. ``o.input``: file, folder or glob; ``o.output``: a folder.

    Connects to ``ro.address`` or starts a local Ray instance, unless Ray is already initialised in this
    process (then that one is used and left running)."""
    from generative_rec.generate import check_can_explain

    t0 = time.perf_counter()
    say = print if progress else (lambda *a, **k: None)
    if ro.output_format not in ("jsonl", "parquet"):
        raise ConfigError(f"--output-format {ro.output_format!r}: jsonl or parquet")
    if ro.workers < 1:
        raise ConfigError("--workers must be at least 1")
    bundle = _bundle(o.bundle)  # fails early on a wrong path (on this node)
    if o.explain:
        check_can_explain(bundle)
    out = Path(o.output)
    check_output(out, o)
    shards = plan_shards(input_files(o.input), ro.shard_users)
    lines = sum(s.lines for s in shards)
    with contextlib.ExitStack() as stack:
        def ray_up() -> None:
            if start_ray(ro):
                import ray

                stack.callback(ray.shutdown)
            _data_context(ro)

        if lines <= ro.check_on_driver:  # small input: checked here, in seconds, before Ray even starts
            say(f"[ray] {len(shards)} shard(s), {lines} lines of {o.input}: checking them", flush=True)
            checks = {s.name: check_shard(s, o) for s in shards}
        else:
            ray_up()
            say(f"[ray] {len(shards)} shard(s), {lines} lines of {o.input}: checking them on Ray", flush=True)
            checks = check_all(shards, o)
        validate(shards, checks, o.skip_invalid)
        prepare_output(out, o, ro, shards)
        manifest = read_manifest(out) if o.resume else {}
        todo = [s for s in shards
                if not is_done(out, s, manifest.get(s.name), checks[s.name]["fingerprint"], ro.output_format)]
        summary: dict[str, Any] = {
            "users": sum(c["users"] for c in checks.values()), "shards": len(shards),
            "shards_skipped": len(shards) - len(todo),
            "skipped_done": sum(checks[s.name]["users"] for s in shards if s not in todo), "shards_written": 0,
            "written": 0, "invalid": sum(len(c["bad"]) for c in checks.values()), "workers": 0,
            "worker_processes": 0, "seconds": 0.0, "decode_seconds": 0.0, "output": str(out)}
        if todo:
            ray_up()
            decode_shards(out, o, ro, todo, checks, summary, say)
        else:
            say(f"[ray] all {len(shards)} shard(s) already done", flush=True)
    for p in out.glob(f".*{TMP_MARK}*"):  # attempts of killed workers
        p.unlink(missing_ok=True)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def decode_shards(out: Path, o: GenerateOptions, ro: RayOptions, todo: list[Shard], checks: dict[str, dict],
                  summary: dict, say) -> None:
    """The actor pool over the shards to do; each finished shard is recorded in the manifest at once."""
    import ray
    import ray.data

    from generative_rec.decoding.vllm_processor import LOGPROBS_EXTRA

    need = max(checks[s.name]["width"] for s in todo)
    engine = replace(o.engine, max_logprobs=max(o.engine.max_logprobs, need + LOGPROBS_EXTRA))
    gpus = ro.gpus_per_worker
    if gpus is None:
        gpus = float(o.engine.tensor_parallel_size) if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    workers = summary["workers"] = min(ro.workers, len(todo))
    each = f"{gpus:g} GPU" if gpus else f"{ro.cpus_per_worker:g} CPU"
    say(f"[ray] decoding {len(todo)} shard(s) ({sum(checks[s.name]['users'] for s in todo)} users) on {workers} "
        f"worker(s), {each} each; {summary['shards_skipped']} shard(s) already done", flush=True)
    with warnings.catch_warnings():  # Ray 2.60 has no named parameter for actor restarts / task retries yet
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = _shard_rows(todo).map_batches(
            ShardDecoder, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs={"o_json": _options_to_json(replace(o, engine=engine)), "out": str(out.resolve()),
                                   "fmt": ro.output_format},
            num_cpus=ro.cpus_per_worker, num_gpus=gpus or None, runtime_env={"env_vars": actor_env(ro, gpus)},
            max_restarts=ro.max_restarts, max_task_retries=ro.max_task_retries)
    by_name = {s.name: s for s in todo}
    t0, procs = time.perf_counter(), set()
    for row in ds.iter_rows():
        r = json.loads(row["result"])
        s = by_name[r["shard"]]
        if r["fingerprint"] != checks[s.name]["fingerprint"]:
            raise DataError(f"shard {s.name}: its input changed during the run", s.path)
        append_manifest(out, {**r, "input": s.path, "first_line": s.first_line, "lines": s.lines,
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        procs.add(r["worker"])
        summary["shards_written"] += 1
        summary["written"] += r["records"]
        el = time.perf_counter() - t0
        say(f"[ray] {summary['shards_written']}/{len(todo)} shards, {summary['written']} users "
            f"({summary['written'] / el:.2f} users/s) — {s.name}: {r['records']} users in {r['seconds']} s "
            f"on {r['worker']}", flush=True)
    summary["worker_processes"] = len(procs)
    summary["decode_seconds"] = round(time.perf_counter() - t0, 2)


# --------------------------------------------------------------------------- CLI
def add_cli_args(s) -> None:
    """The Ray flags of ``genrec generate`` (all but --engine default to None: set only with --engine ray)."""
    d = RayOptions()
    g = s.add_argument_group("Ray (--engine ray): many engines, on this machine or a cluster (docs/cluster.md)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: one vLLM engine in this process (default); ray: one engine per Ray actor, "
                        "--input a file, folder or glob of JSONL/Parquet shards, --output a folder")
    g.add_argument("--workers", type=int, help=f"Ray actors, each with one vLLM engine (default {d.workers})")
    g.add_argument("--ray-address", dest="ray_address",
                   help="an existing Ray cluster: auto (the one `ray start` set up on this node) or HOST:PORT; "
                        "default: start a local Ray instance")
    g.add_argument("--cpus-per-worker", dest="cpus_per_worker", type=float,
                   help=f"Ray CPUs per actor; on a CPU engine also its threads (default {d.cpus_per_worker:g})")
    g.add_argument("--gpus-per-worker", dest="gpus_per_worker", type=float,
                   help="GPUs per actor (default: --tensor-parallel-size when the cluster has GPUs, else 0)")
    g.add_argument("--output-format", dest="output_format", choices=("jsonl", "parquet"),
                   help=f"the output shards' format (default {d.output_format})")
    g.add_argument("--shard-users", dest="shard_users", type=int,
                   help=f"cut JSONL input files into shards of at most this many lines (default {d.shard_users})")


CLI_FLAGS = {"workers": "workers", "ray_address": "address", "cpus_per_worker": "cpus_per_worker",
             "gpus_per_worker": "gpus_per_worker", "output_format": "output_format", "shard_users": "shard_users"}


def ray_options(a) -> RayOptions:
    return RayOptions(**{f: getattr(a, k) for k, f in CLI_FLAGS.items() if getattr(a, k, None) is not None})


def check_local_flags(a) -> None:
    """Ray flags without --engine ray are a mistake, not something to ignore."""
    used = [f"--{k.replace('_', '-')}" for k in CLI_FLAGS if getattr(a, k, None) is not None]
    if used:
        raise ConfigError(f"{', '.join(used)}: only with --engine ray")


def cmd_generate_ray(a, o: GenerateOptions) -> None:
    s = generate_ray(o, ray_options(a))
    rate = s["written"] / s["seconds"] if s["seconds"] else 0.0
    print(f"{o.output}: {s['written']} users written in {s['shards_written']} shard(s) "
          f"({s['skipped_done']} users in {s['shards_skipped']} shard(s) already there, {s['invalid']} invalid) "
          f"by {s['workers']} worker(s) in {s['seconds']} s ({rate:.2f} users/s, engine starts included)")
