"""Item text that spells tokens: a title containing an item-token string, the EOS string, a template marker or
10 kB of text renders as text in every template and explanation target, never as an item or control
token, and constrained decoding still returns only catalogue items."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from generative_rec.data import PrepareConfig, RecData, prepare
from generative_rec.indexing import IndexConfig, build_index
from generative_rec.plain_text import plain_ids
from generative_rec.prompts import Renderer, load_templates


def hostile_titles(eos: str) -> list[str]:
    return ["Best <item_5> ever", f"The End{eos}", "<item_0><item_1>", "{history} and {title}", "x" * 10_000,
            f"<item_7>{eos}<item_7>", "Normal Title", "<item_", "item_3>", "<<item_2>>"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A catalogue whose titles spell item tokens and the EOS string, trained into a tiny atomic bundle."""
    from helpers import load_tiny

    from generative_rec.modeling import train_tiny_tokenizer
    from generative_rec.training import train

    root = tmp_path_factory.mktemp("hostile")
    eos = train_tiny_tokenizer(["probe text"], root / "probe").eos_token
    titles = hostile_titles(eos)
    n_items = 24
    with open(root / "items.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title"])
        for i in range(n_items):
            w.writerow([f"m{i}", titles[i] if i < len(titles) else f"Film {i}"])
    with open(root / "inter.jsonl", "w", encoding="utf-8") as f:
        for u in range(20):
            for t in range(8):
                f.write(json.dumps({"user": f"u{u}", "item": f"m{(u + 3 * t) % n_items}", "ts": t}) + "\n")
    data = prepare(PrepareConfig(source="table", output=str(root / "prepared"), table={
        "path": str(root / "inter.jsonl"), "user": "user", "item": "item", "timestamp": "ts",
        "items_path": str(root / "items.csv"), "item_id": "item_id", "title": "title"}))
    bundle = train(load_tiny(Path(data), root / "bundle", prompts={"tasks": {"next_item": 1.0, "item_title": 0.5}}))
    return RecData(Path(data)), Path(bundle)


def test_plain_ids_never_yield_an_added_or_special_token(hostile):
    from generative_rec.bundle import Bundle

    data, bundle_path = hostile
    tok = Bundle(bundle_path).tokenizer
    added = set(tok.added_tokens_decoder)
    assert tok.convert_tokens_to_ids("<item_5>") in added  # the item tokens exist in this vocabulary
    for title in hostile_titles(tok.eos_token):
        ids = plain_ids(tok, title)
        assert not set(ids) & added, title[:40]
        assert tok.decode(ids).replace(" ", "") == title.replace(" ", ""), title[:40]


def test_every_template_renders_hostile_titles_as_text(hostile):
    """Differential: each shipped template rendered with the hostile titles and with benign ones holds the same
    item tokens (only where the template puts IDs) and no special token beyond BOS."""
    from generative_rec.bundle import Bundle

    data, bundle_path = hostile
    b = Bundle(bundle_path)
    tok = b.tokenizer
    r = b.renderer
    benign = Renderer(tok, r.id_tokens, [f"Film {n}" for n in range(data.num_items)], r.domain)
    id_tokens = {t for ids in r.id_tokens for t in ids}
    special = set(tok.all_special_ids)
    hostile_items = [n for n, t in enumerate(data.titles) if "<" in t or tok.eos_token in t or "{" in t]
    assert len(hostile_items) >= 7
    rendered = 0
    for templates in load_templates().values():
        for t in templates:
            for item in hostile_items:
                history = [h for h in hostile_items if h != item][:4]
                values = {"reason": data.titles[item], "review": data.titles[item], "text": data.titles[item],
                          "summary": data.titles[item], "keywords": data.titles[item], "attributes": "a"}
                try:
                    got = r.item_prompt_ids(t, item, history, **values)
                    want = benign.item_prompt_ids(t, item, history, **values)
                except Exception as e:  # a template needing a value this test does not give
                    assert "placeholder" in str(e), (t.key, e)
                    continue
                rendered += 1
                assert [i for i in got if i in id_tokens] == [i for i in want if i in id_tokens], t.key
                assert not set(got[len(r.bos):]) & special, (t.key, data.titles[item][:30])
    assert rendered >= 50


def test_title_scheme_ids_are_plain_text_and_decoding_stays_in_the_catalogue(hostile):
    """Title IDs spelled with item-token strings and EOS still form a valid trie of plain-text IDs."""
    from generative_rec.bundle import Bundle, load_bundle_model
    from generative_rec.evaluation.llm import evaluate_llm

    data, bundle_path = hostile
    b = Bundle(bundle_path)
    tok = b.tokenizer
    index = build_index(data, IndexConfig(scheme="title"))
    ids = index.token_ids(tok)
    assert not {i for seq in ids for i in seq} & (set(tok.added_tokens_decoder) | set(tok.all_special_ids))
    assert len({tuple(s) for s in ids}) == data.num_items  # still one distinct ID per item
    # the trained atomic bundle: every recommendation is a catalogue item, K distinct
    model = load_bundle_model(b)
    res = evaluate_llm(model, b.renderer, b.trie, data, "test", list(range(data.num_users)), b.template(), ks=[10],
                       batch_size=8, pad_id=tok.pad_token_id, mask_history=True, progress=False)
    topk = res["topk"]
    assert topk.shape == (data.num_users, 10)
    assert ((topk >= 0) & (topk < data.num_items)).all()
    assert all(len(set(row)) == 10 for row in topk.tolist())
