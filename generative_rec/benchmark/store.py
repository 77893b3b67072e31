"""Where a benchmark keeps what it has done: the prepared data, the shared set-up, one file per model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from generative_rec.errors import ConfigError, GenRecError
from generative_rec.io import atomic_write_json, read_json


def ensure_prepared(path: str | Path) -> Path:
    """The prepared data folder; MovieLens-100K is prepared into it first when it does not exist."""
    path = Path(path)
    if (path / "meta.json").exists():
        return path
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"{path} is not a prepared data folder (no meta.json); run `genrec prepare`")
    from generative_rec.data import PrepareConfig, prepare

    print(f"preparing MovieLens-100K into {path}", flush=True)
    return Path(prepare(PrepareConfig(source="ml-100k", output=str(path))))


def setup_record(data, users: np.ndarray, n_users: int | None, seed: int, ks: tuple[int, ...],
                 tier: str) -> dict:
    """What every model's result must share (checked on ``--resume``)."""
    return {"data": str(Path(data.path).resolve()), "data_name": data.name, "num_users": data.num_users,
            "num_items": data.num_items, "split": "test", "mask_history": True, "ks": list(ks),
            "users": int(len(users)), "user_sample": {"n": n_users, "seed": seed}, "tier": tier}


class ModelStore:
    """``<output>/models/<name>.json`` (record) and ``.npz`` (per-user values), each written atomically."""

    def __init__(self, output: Path, setup: dict):
        self.dir, self.setup = output / "models", setup

    def done(self, name: str) -> bool:
        return (self.dir / f"{name}.json").exists() and (self.dir / f"{name}.npz").exists()

    def load(self, name: str) -> tuple[dict, dict[str, np.ndarray]]:
        rec = read_json(self.dir / f"{name}.json")
        if rec.get("setup") != self.setup:
            raise GenRecError(f"{self.dir / name}.json was computed for another set-up ({rec.get('setup')}); "
                              f"use another --output or run without --resume")
        with np.load(self.dir / f"{name}.npz") as z:
            return rec, {k: z[k] for k in z.files}

    def save(self, name: str, record: dict, arrays: dict[str, np.ndarray]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self.dir / f"{name}.npz")
        atomic_write_json(self.dir / f"{name}.json", {**record, "setup": self.setup})  # written last: done
