"""The explain and domain_text tasks, explanation prompts and generation, and their evaluation (tiny model).

Two synthetic data sets: the shared one without reviews (templated, verifiable reasons) and an Amazon-format
review file whose users' last two reviews carry a secret word that no training example may contain.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from helpers import load_tiny

from generative_rec.bundle import Bundle
from generative_rec.data import RecData
from generative_rec.errors import ConfigError
from generative_rec.explain.contract import (
    clean_explanation,
    explain_prompt_ids,
    explain_settings,
    explain_template,
    explanations_trained,
    vllm_sampling_kwargs,
)
from generative_rec.explain.evaluate import (
    claim_stats,
    evaluate_bundle_explanations,
    explanation_catalogue,
    render_markdown,
)
from generative_rec.explain.hf import explain_items, generate_explanations
from generative_rec.explain.metrics import corpus_bleu, faithfulness
from generative_rec.indexing import IndexConfig, build_index
from generative_rec.modeling import train_tiny_tokenizer
from generative_rec.prompts import IGNORE, Renderer, load_templates
from generative_rec.tasks import TaskContext, build_task
from generative_rec.tasks.explain import review_reason

SECRET = "zanzibar"
FEATURES = ["strings", "tuner", "cable", "pedal", "capo", "strap", "pick", "stand"]


def write_reviews(path: Path, n_users: int = 24, n_items: int = 12, seed: int = 0) -> Path:
    """Amazon 2014-format reviews; each user's last two reviews (validation, test) contain SECRET."""
    rng = random.Random(seed)
    rows = []
    for u in range(n_users):
        length = rng.randint(5, 8)
        items = rng.sample(range(n_items), length)
        for t, i in enumerate(items):
            held = t >= length - 2
            word = SECRET if held else FEATURES[i % len(FEATURES)]
            review = f"Arrived on time. The {word} on item {i} works well for user {u}. Shipping was quick and fine."
            rows.append({"reviewerID": f"u{u}", "asin": f"B{i:04d}", "overall": 5.0, "unixReviewTime": 1000 + 10 * t,
                         "reviewText": review, "summary": f"{SECRET} summary" if held else f"good {FEATURES[i % 8]}"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def review_data(tmp_path_factory) -> Path:
    from generative_rec.data import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("reviews")
    p = write_reviews(root / "reviews.json")
    return prepare(PrepareConfig(source="amazon", amazon={"path": str(p)}, output=str(root / "prepared"),
                                 attribute_field="keywords"))


class SpyRenderer(Renderer):
    """Records what each single-item example was built from."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[tuple[str, int, list[int], dict]] = []

    def item_example(self, t, item, history=None, **values):
        self.calls.append((t.key, int(item), [int(h) for h in history or []], values))
        return super().item_example(t, item, history=history, **values)


def _ctx(data_path: Path, tmp: Path, spy: bool = False, **options) -> TaskContext:
    data = RecData(data_path)
    tok = train_tiny_tokenizer(data.titles + data.texts + ["0123456789 Because you chose"], tmp / "tok")
    index = build_index(data, IndexConfig(scheme="sequential"))
    cls = SpyRenderer if spy else Renderer
    r = cls(tok, index.token_ids(tok), data.titles, data.meta.get("domain", "item"))
    return TaskContext(data, r, max_history=8, options=options)


def _templates(task: str):
    return [t for t in load_templates()[task] if not t.heldout]


def _is_slice(seq, part) -> bool:
    n = len(part)
    return any(list(seq[j: j + n]) == part for j in range(len(seq) - n + 1))


# --------------------------------------------------------------------------- the explain task
def test_explain_examples_use_training_data_and_faithful_reasons(tiny_data, tmp_path):
    ctx = _ctx(tiny_data, tmp_path, spy=True, explain={"max_history": 5})
    data = ctx.data
    ex = build_task("explain", ctx, _templates("explain"), 2.0, random.Random(0))
    calls = ctx.renderer.calls
    assert len(ex) == len(calls) == 2 * sum(len(data.train_sequence(u)) > 1 for u in range(data.num_users))
    cat = explanation_catalogue(data.titles, data.attributes, "item")
    for _, item, hist, values in calls:
        # (history, item) is a contiguous run of some user's TRAINING sequence, history at most 5 items
        assert 1 <= len(hist) <= 5
        assert any(_is_slice(data.train_sequence(u), [*hist, item]) for u in range(data.num_users))
        f = faithfulness(values["reason"], hist, item, cat)
        assert not f.hallucinated and f.cites_history and f.names_recommended, values["reason"]
    # a pure function of the rng
    again = build_task("explain", _ctx(tiny_data, tmp_path / "b", explain={"max_history": 5}), _templates("explain"), 2.0, random.Random(0))
    assert again == ex


def test_explain_labels_only_on_the_reason(tiny_data, tmp_path):
    ctx = _ctx(tiny_data, tmp_path, spy=True)
    r = ctx.renderer
    ex = build_task("explain", ctx, _templates("explain"), 0.3, random.Random(1))
    templates = {t.key: t for t in _templates("explain")}
    for (ids, labels), (key, item, hist, values) in zip(ex, r.calls, strict=True):
        tgt = [x for x in labels if x != IGNORE]
        assert tgt == r.text(values["reason"]) + [r.eos]
        assert ids[-len(tgt):] == tgt and labels[: len(ids) - len(tgt)] == [IGNORE] * (len(ids) - len(tgt))
        assert ids[: len(ids) - len(tgt)] == r.item_prompt_ids(templates[key], item, history=hist)


def test_explain_review_targets_come_from_training_reviews(review_data, tmp_path):
    ctx = _ctx(review_data, tmp_path, spy=True)
    data = ctx.data
    assert "review" in data.user_columns
    ex = build_task("explain", ctx, _templates("explain"), 3.0, random.Random(0))
    allowed = {review_reason(data, u, p, int(s[p])) for u in range(data.num_users)
               for p, s in [(p, data.train_sequence(u)) for p in range(len(data.train_sequence(u)))]}
    assert ex and all(values["reason"] in allowed for _, _, _, values in ctx.renderer.calls)
    assert any(w in values["reason"] for w in FEATURES for _, _, _, values in ctx.renderer.calls)
    tok = ctx.renderer.tokenizer
    assert not any(SECRET in tok.decode(ids) for ids, _ in ex)
    # explicitly asking for templated reasons works on review data too; 'review' on data without is an error
    ctx2 = _ctx(review_data, tmp_path / "h", spy=True, explain={"source": "history"})
    build_task("explain", ctx2, _templates("explain"), 0.5, random.Random(0))
    assert all(values["reason"] not in allowed for *_, values in ctx2.renderer.calls)
    with pytest.raises(ConfigError, match="unknown key"):
        build_task("explain", _ctx(review_data, tmp_path / "x", explain={"nope": 1}), _templates("explain"), 1.0,
                   random.Random(0))


# --------------------------------------------------------------------------- domain text
def test_domain_text_examples(review_data, tiny_data, tmp_path):
    ctx = _ctx(review_data, tmp_path, domain_text={"max_tokens": 512})
    r, data = ctx.renderer, ctx.data
    ex = build_task("domain_text", ctx, _templates("domain_text"), 1.0, random.Random(0))
    n_reviews = sum(len(data.train_sequence(u)) for u in range(data.num_users))
    assert len(ex) == data.num_items + n_reviews
    texts = [r.tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in ex]
    for ids, labels in ex:
        k = len(r.bos)
        assert labels[:k] == [IGNORE] * k and labels[k:] == ids[k:]  # loss on every text token
    assert not any(SECRET in t for t in texts)  # validation / test reviews never used
    assert sum("Shipping was quick and fine" in t for t in texts) == n_reviews
    ctx.options["domain_text"] = {"max_tokens": 16}  # long documents are cut
    short = build_task("domain_text", ctx, _templates("domain_text"), 1.0, random.Random(0))
    assert [e[0] for e in short] == [ids[:16] for ids, _ in ex]
    # data without reviews: item descriptions only
    ctx2 = _ctx(tiny_data, tmp_path / "t")
    ex2 = build_task("domain_text", ctx2, _templates("domain_text"), 1.0, random.Random(0))
    assert len(ex2) == ctx2.data.num_items


# --------------------------------------------------------------------------- bundles, prompts, generation
@pytest.fixture(scope="module")
def explain_bundle(tmp_path_factory, tiny_data) -> Path:
    from generative_rec.training import train

    out = tmp_path_factory.mktemp("explain-bundle") / "bundle"
    cfg = load_tiny(tiny_data, out, prompts={"tasks": {"next_item": 1.0, "explain": 1.0, "domain_text": 0.3},
                                             "task_options": {"explain": {"max_history": 4}}})
    return train(cfg)


@pytest.fixture(scope="module")
def review_bundle(tmp_path_factory, review_data) -> Path:
    from generative_rec.training import train

    out = tmp_path_factory.mktemp("review-bundle") / "bundle"
    return train(load_tiny(review_data, out, prompts={"tasks": {"next_item": 1.0, "explain": 1.0}}))


def test_bundle_trained_with_explain_carries_its_templates(explain_bundle, tiny_bundle):
    b = Bundle(explain_bundle)
    assert explanations_trained(b)
    trained = set(b.manifest["trained_templates"])
    assert {t.key for t in _templates("explain")} <= trained and "explain/heldout-justify" not in trained
    assert explain_template(b).key == "explain/why" and explain_template(b, "heldout-justify").heldout
    assert explain_settings(b).max_history == 4  # read back from the bundle's own config
    # a bundle not trained to explain carries the templates, but is not "explanation-capable"
    plain = Bundle(tiny_bundle)
    assert any(t.task == "explain" for t in plain.templates.values()) and not explanations_trained(plain)
    with pytest.raises(ConfigError, match="not trained with the explain task"):
        explain_template(plain)
    with pytest.raises(ConfigError, match="unknown explain template"):
        explain_template(b, "next_item/compact")


def test_explain_prompt_ids_contract(explain_bundle):
    b = Bundle(explain_bundle)
    hist, item = [3, 5, 7, 9, 11, 13], 2
    ids = explain_prompt_ids(b, hist, item)
    assert ids == b.renderer.item_prompt_ids(explain_template(b), item, history=hist[-4:])
    text = b.tokenizer.decode(ids, skip_special_tokens=True)
    assert b.titles[item] in text and b.titles[13] in text and b.titles[3] not in text
    assert explain_prompt_ids(b, hist, item, "heldout-justify", max_history=2) == \
        b.renderer.item_prompt_ids(explain_template(b, "heldout-justify"), item, history=[11, 13])


def test_generation_returns_text_and_respects_suppression(explain_bundle, tiny_bundle):
    from generative_rec.bundle import load_bundle_model

    b = Bundle(explain_bundle)
    model = load_bundle_model(b)
    out = explain_items(b, model, [1, 2, 3], [4, 5, 6], batch_size=2)
    assert len(out) == 3 and all(isinstance(x, str) and "\n" not in x for x in out)
    # suppression: with every token but one (and EOS) suppressed, only that token can be generated
    tok = b.tokenizer
    keep = tok.convert_tokens_to_ids("▁A") if "▁A" in tok.get_vocab() else tok("A", add_special_tokens=False)["input_ids"][-1]
    banned = [i for i in range(len(tok)) if i not in (keep, tok.eos_token_id)]
    prompts = [explain_prompt_ids(b, [1, 2], 3), explain_prompt_ids(b, [4], 5)]
    texts = generate_explanations(model, tok, prompts, max_new_tokens=5, batch_size=2, suppress_token_ids=banned)
    assert all(set(t.replace(" ", "")) <= {"A"} for t in texts), texts
    s = explain_settings(b)
    assert s.suppress_token_ids == tuple(tok.convert_tokens_to_ids(b.index.new_tokens)) and s.template == "explain/why"
    kw = vllm_sampling_kwargs(s)
    assert kw["temperature"] == 0.0 and kw["stop_token_ids"] == [tok.eos_token_id]
    assert kw["max_tokens"] == s.max_new_tokens and set(kw["logit_bias"]) == set(s.suppress_token_ids)
    with pytest.raises(ConfigError):
        explain_settings(Bundle(tiny_bundle))  # not trained to explain: serving answers 400


def test_claim_stats():
    from generative_rec.explain.metrics import Faithfulness

    good = Faithfulness((1, 2), True, (), ("Crime",), ())
    bad = Faithfulness((), False, ("Heat",), ("Crime", "War"), ("War",))
    s = claim_stats([good, bad])
    assert s["titles_per_explanation"] == 2.0 and s["title_precision"] == 3 / 4
    assert s["attributes_per_explanation"] == 1.5 and s["attribute_precision"] == 2 / 3 and s["names_item_rate"] == 0.5
    assert "attribute_precision" not in claim_stats([Faithfulness((), False, (), (), ())])


def test_clean_explanation():
    assert clean_explanation("\n\n  Because  you liked\tHeat.\nSecond line") == "Because you liked Heat."
    assert clean_explanation(" \n ") == ""


def test_evaluate_bundle_explanations_without_reviews(explain_bundle, tiny_data):
    b, data = Bundle(explain_bundle), RecData(tiny_data)
    rep = evaluate_bundle_explanations(b, data, "test", n=6, seed=0)
    assert rep["users"] == 6 and rep["trained"] and rep["template"] == "explain/why" and not rep["has_reviews"]
    for row in ("target", "top1", "reference"):
        r = rep[row]
        assert r["n"] == 6
        # an explanation hallucinates when it names a wrong item OR claims a wrong attribute
        item, attr = r["item_hallucination_rate"], r["attribute_hallucination_rate"]
        assert max(item, attr) <= r["hallucination_rate"] <= min(1.0, item + attr) + 1e-12
    assert "bleu4" not in rep["target"]  # no reviews: no reference text to compare with
    assert rep["reference"]["attribute_precision"] == 1.0 and rep["reference"]["title_precision"] == 1.0
    assert rep["reference"]["names_item_rate"] == 1.0 and len(rep["generated"]) == 6
    assert rep["reference"]["hallucination_rate"] == 0.0 and rep["reference"]["citation_rate"] == 1.0
    ex = rep["examples"][0]
    assert isinstance(ex["target_explanation"], str) and len(ex["history"]) <= 4
    assert ex["top1"] not in ex["history"]  # history masked
    assert "| held-out target (generated) |" in render_markdown(rep)
    json.dumps(rep)  # JSON-able


def test_evaluate_bundle_explanations_with_reviews(review_bundle, review_data):
    b, data = Bundle(review_bundle), RecData(review_data)
    rep = evaluate_bundle_explanations(b, data, "test", n=5, template="heldout-justify")
    assert rep["has_reviews"] and rep["template_heldout"]
    t = rep["target"]
    assert t["n_with_reference"] == 5
    assert len(rep["examples"]) == 5  # every user: the report's BLEU-4 is recomputable from them
    texts, refs = [ex["target_explanation"] for ex in rep["examples"]], [ex["reference"] for ex in rep["examples"]]
    assert t["bleu4"] == pytest.approx(corpus_bleu(texts, refs).score)
    assert all(SECRET in ex["reference"] for ex in rep["examples"])  # the held-out review is the reference


def test_genrec_eval_explain_option(explain_bundle, tmp_path):
    from generative_rec.cli import build_parser
    from generative_rec.config import EvalSection
    from generative_rec.evaluation.run import evaluate_bundle

    a = build_parser().parse_args(["eval", "--bundle", str(explain_bundle), "--explain", "3"])
    assert a.explain == 3
    assert build_parser().parse_args(["eval", "--bundle", "x"]).explain == 0
    cfg = EvalSection(users=6, ks=[1, 5], baselines=[], unconstrained_users=0, explain_users=3)
    rep = evaluate_bundle(explain_bundle, cfg, output=tmp_path, progress=False)
    assert rep["explanations"]["users"] == 3
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["explanations"]["top1"]["n"] == 3
    assert "## Explanations (3 users" in (tmp_path / "results.md").read_text()


def test_shipped_explain_prompts_show_history_and_item():
    for t in load_templates()["explain"]:
        assert {"{history}", "{title}", "{id}"} <= {p for p in ("{history}", "{title}", "{id}") if p in t.prompt}
        assert t.target == "{reason}" and t.prompt.endswith("\n")
    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "prompts" / "domain_text.yaml").read_text())
    assert cfg["task"] == "domain_text"


def test_domain_text_as_a_pretraining_stage(tiny_data, tmp_path):
    """Stage 1: domain_text alone (an ID scheme that adds no tokens, so the merged model is a plain LM);
    stage 2: fine-tune recommendation + explanation from stage 1's merged model."""
    from generative_rec.training import train

    stage1 = train(load_tiny(tiny_data, tmp_path / "stage1", index={"scheme": "sequential"},
                             prompts={"tasks": {"domain_text": 1.0}}, train={"max_steps": 3}))
    assert Bundle(stage1).metrics["train"]["steps"] == 3 and not explanations_trained(Bundle(stage1))
    stage2 = train(load_tiny(tiny_data, tmp_path / "stage2", model={"base": str(stage1 / "model")},
                             prompts={"tasks": {"next_item": 1.0, "explain": 1.0}}, train={"max_steps": 3}))
    b = Bundle(stage2)
    assert b.manifest["base_model"] == str(stage1 / "model") and explanations_trained(b)
