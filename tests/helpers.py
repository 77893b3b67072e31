"""Helpers shared by the tests (data writers, tiny run configs). Fixtures live in conftest.py."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AMAZON = (
    Path(os.environ.get("GENREC_SHARED_DATA", REPO.parent / "shared" / "data"))
    / "amazon-musical-instruments-2014"
    / "reviews_Musical_Instruments_5.json.gz"
)

WORDS = [
    "red",
    "blue",
    "night",
    "city",
    "river",
    "ghost",
    "star",
    "king",
    "love",
    "war",
    "dream",
    "iron",
    "silent",
    "golden",
    "last",
    "lost",
    "wild",
    "dark",
    "summer",
    "winter",
]
GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


def write_synthetic(folder: Path, n_users: int = 30, n_items: int = 40, seed: int = 0) -> tuple[Path, Path]:
    """Interactions (JSONL) and items (CSV) with titles and genres; users follow genre-ish chains."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = folder / "items.csv"
    with open(items, "w", encoding="utf-8") as f:
        f.write("item_id,title,genres\n")
        for i in range(n_items):
            title = " ".join(rng.sample(WORDS, 2)).title() + f" ({1980 + i % 30})"
            f.write(f"m{i},{title},{GENRES[i % len(GENRES)]} {GENRES[(i * 7) % len(GENRES)]}\n")
    inter = folder / "inter.jsonl"
    with open(inter, "w", encoding="utf-8") as f:
        for u in range(n_users):
            length = rng.randint(5, 14)
            start = rng.randrange(n_items)
            for t in range(length):
                item = (start + t * (1 + u % 3)) % n_items
                f.write(json.dumps({"user": f"u{u}", "item": f"m{item}", "ts": 1000 + 10 * t + u}) + "\n")
    return inter, items


PRODUCTS = {  # taste cluster -> products a reviewer in it buys; each product has its own words
    "guitar": ["guitar strap", "capo", "clip tuner", "string winder", "guitar picks", "fret cleaner",
               "acoustic strings", "guitar stand", "slide", "humidifier"],
    "recording": ["pop filter", "xlr cable", "mic stand", "shock mount", "audio interface", "studio monitor",
                  "headphones", "windscreen", "phantom power", "usb microphone"],
    "pedals": ["distortion pedal", "delay pedal", "patch cable", "pedal board", "power supply", "tuner pedal",
               "wah pedal", "looper", "chorus pedal", "reverb pedal"],
    "keys": ["sustain pedal", "keyboard stand", "midi cable", "bench", "dust cover", "keyboard bag",
             "expression pedal", "music rest", "headphone adapter", "sheet light"],
}
BRANDS = ["Fender", "Ernie", "Snark", "Dunlop", "Planet", "Boss", "Shure", "Behringer", "Hosa", "Kyser",
          "Mogami", "Ibanez"]
PRAISE = ["sturdy build", "clear sound", "solid feel", "no noise", "easy setup", "tight fit", "bright tone",
          "long cable", "quiet switch", "warm tone"]


def write_amazon_sample(path: Path, n_users: int = 120, seed: int = 0) -> Path:
    """A review file in the Amazon 2014 layout (one JSON object per line, gzip when ``.gz``), made by the
    project: users buy mostly within one taste cluster, over time, and write product-specific reviews, so
    titles can be mined and a recommender has something to learn. A few hundred lines (5-core-like)."""
    rng = random.Random(seed)
    products = [(cluster, f"{BRANDS[n % len(BRANDS)]} {name}", f"B00{n:05d}{cluster[0].upper()}")
                for n, (cluster, name) in enumerate((c, p) for c, ps in PRODUCTS.items() for p in ps)]
    by_cluster = {c: [p for p in products if p[0] == c] for c in PRODUCTS}
    lines = []
    for u in range(n_users):
        home = list(PRODUCTS)[u % len(PRODUCTS)]
        t = 1_300_000_000 + rng.randrange(10_000_000)
        bought: set[str] = set()
        for _ in range(rng.randint(5, 9)):
            pool = by_cluster[home] if rng.random() < 0.8 else products
            cluster, name, asin = rng.choice([p for p in pool if p[2] not in bought] or pool)
            if asin in bought:
                continue
            bought.add(asin)
            t += rng.randrange(86_400, 30 * 86_400)
            praise = rng.choice(PRAISE)
            lines.append({
                "reviewerID": f"A{u:04d}X", "asin": asin, "reviewerName": f"reviewer {u}", "helpful": [0, 0],
                "reviewText": f"This {name.lower()} has a {praise}. I use the {name.split(' ', 1)[1]} "
                              f"for {cluster} every week.",
                "overall": float(rng.choice([3, 4, 5, 5, 5])), "summary": f"{name.split(' ', 1)[1]}, {praise}",
                "unixReviewTime": t, "reviewTime": "01 1, 2012",
            })
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, "".join(json.dumps(x) + "\n" for x in lines))


def write_text(path: Path, text: str) -> Path:
    """``text`` to ``path``, gzipped when the name ends in ``.gz``."""
    import gzip

    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def prepare_synthetic(folder: Path, **kw):
    from generative_rec.data import PrepareConfig, prepare

    inter, items = write_synthetic(folder / "raw", **kw)
    return prepare(
        PrepareConfig(
            source="table",
            output=str(folder / "prepared"),
            attribute_field="genres",
            table={
                "path": str(inter),
                "user": "user",
                "item": "item",
                "timestamp": "ts",
                "items_path": str(items),
                "item_id": "item_id",
                "title": "title",
                "item_fields": ["genres"],
            },
        )
    )


def sequential_setup(data_path: Path, folder: Path):
    """The tiny prepared data, a SentencePiece tokenizer trained on its titles (and digits) in ``folder``, and
    its sequential index: what the prompt tests render with. Returns ``(data, tokenizer, index)``."""
    from generative_rec.data import RecData
    from generative_rec.indexing import IndexConfig, build_index
    from generative_rec.modeling import train_tiny_tokenizer

    data = RecData(data_path)
    tok = train_tiny_tokenizer(data.titles + ["0123456789 A user's items, oldest first"], folder)
    return data, tok, build_index(data, IndexConfig(scheme="sequential"))


def tiny_config(data: Path, output: Path, **sections) -> dict:
    cfg = {
        "data": {"path": str(data)},
        "index": {"scheme": "atomic"},
        "model": {"base": "tiny-random", "tiny": {"hidden": 32, "layers": 2, "heads": 2, "vocab": 300}},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "prompts": {"tasks": {"next_item": 1.0, "item_title": 0.2}, "max_history": 8},
        "train": {
            "max_steps": 6,
            "batch_size": 4,
            "lr": 0.01,
            "save_every": 0,
            "eval_users": 8,
            "log_every": 2,
        },
        "eval": {"users": 10, "ks": [1, 5, 10]},
        "output": str(output),
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


def load_tiny(data: Path, output: Path, **sections):
    from generative_rec.config import RunConfig, from_dict

    return from_dict(RunConfig, tiny_config(data, output, **sections))
