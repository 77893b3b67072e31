"""The real server (``genrec serve`` in a subprocess on 127.0.0.1) with the stock ``openai`` client and HTTP.

Checks: /health and /v1/models as vLLM serves them; constrained completions contain only catalogue items
(greedy and sampled, with exclusions); /v1/recommendations returns k distinct catalogue items ranked by
score, the same as batch generation and the HF reference; bad input is a 400 that says what is wrong and
the server keeps serving; a wrong API key is a 401 on every /v1 route; the route is in the OpenAPI doc.
"""

from __future__ import annotations

import concurrent.futures as cf
import json

import pytest
import torch
from vllm_helpers import API_KEY, assert_same_topk

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    from generative_rec.bundle import Bundle

    return Bundle(tiny_bundle)


def completion_item(bundle, token_ids) -> int:
    toks = list(token_ids)
    if toks and toks[-1] == bundle.tokenizer.eos_token_id:
        toks = toks[:-1]
    return bundle.trie.item_of(toks)


# ------------------------------------------------------------------------------------------- vLLM's own routes
def test_health_and_models(tiny_server):
    import httpx

    assert httpx.get(f"{tiny_server.base}/health").status_code == 200  # no key needed
    assert [m.id for m in tiny_server.client().models.list()] == ["genrec"]


def test_constrained_completions_are_catalogue_items(tiny_server, bundle, users):
    c = tiny_server.client()
    prompt = bundle.prompt_ids(bundle.lookup(users[0]["history"])[-20:])
    greedy = c.completions.create(model="genrec", prompt=prompt, max_tokens=12, temperature=0,
                                  extra_body={"vllm_xargs": {"genrec_constrained": True}, "return_token_ids": True})
    g = completion_item(bundle, greedy.choices[0].token_ids)
    assert g >= 0 and greedy.choices[0].finish_reason == "stop"
    assert greedy.choices[0].text.strip() == bundle.index.id_texts[g]
    excluded = [bundle.item_ids[g], bundle.item_ids[0]]
    sampled = c.completions.create(model="genrec", prompt=prompt, max_tokens=12, temperature=1.5, n=16,
                                   extra_body={"vllm_xargs": {"genrec_constrained": 1, "genrec_exclude": excluded},
                                               "return_token_ids": True})
    items = [completion_item(bundle, ch.token_ids) for ch in sampled.choices]
    assert all(i >= 0 for i in items), [ch.token_ids for ch in sampled.choices]
    assert not {bundle.item_ids[i] for i in items} & set(excluded)
    plain = c.completions.create(model="genrec", prompt=prompt, max_tokens=6, temperature=0)  # processor inert
    assert plain.choices[0].finish_reason == "length"


def test_constrained_completion_bad_xargs_is_400(tiny_server, bundle):
    import openai

    with pytest.raises(openai.BadRequestError, match="unknown item"):
        tiny_server.client().completions.create(model="genrec", prompt=bundle.prompt_ids([0]), max_tokens=8,
                                                extra_body={"vllm_xargs": {"genrec_constrained": 1,
                                                                           "genrec_exclude": ["nope"]}})


BAD_SCORING = [
    ({"temperature": 1.0}, {"genrec_score": 1}, "temperature must be 0"),
    ({"temperature": 0, "presence_penalty": 0.5}, {"genrec_score": 1}, "penalty"),
    ({"temperature": 0}, {"genrec_score": 1, "genrec_prefix": [10**6]}, "not the start of an unfinished item ID"),
    ({"temperature": 0}, {"genrec_score": 1, "genrec_prefix": "12"}, "must be a list of token ids"),
    ({"temperature": 0}, {"genrec_prefix": [1]}, "needs vllm_xargs.genrec_constrained: 1 or genrec_score: 1"),
    ({"temperature": 0}, {"genrec_score": 1, "genrec_constrained": 1}, "cannot be combined"),
    ({"temperature": 0}, {"genrec_score": 1, "genrec_exclude": ["nope"]}, "unknown item"),
]


@pytest.mark.parametrize(("body", "xargs", "message"), BAD_SCORING, ids=[m[:20] for *_, m in BAD_SCORING])
def test_bad_scoring_requests_are_400(tiny_server, bundle, body, xargs, message):
    r = tiny_server.post("/v1/completions", {"model": "genrec", "prompt": bundle.prompt_ids([0]), "max_tokens": 1,
                                             "logprobs": 5, "vllm_xargs": xargs, **body})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"], r.text


def test_scoring_completion_returns_top_allowed_children(tiny_server, bundle, users):
    """``genrec_score`` over HTTP (what /v1/recommendations sends inside the server): with ``logprobs=W+1``
    the W best trie-allowed first tokens come back with HF's full-vocabulary log-probs."""
    from transformers import AutoModelForCausalLM

    seq = bundle.trie.sequence(7)
    prefix = max((seq[:d] for d in range(len(seq))), key=lambda p: len(bundle.trie.allowed_after(p)))
    assert len(bundle.trie.allowed_after(prefix)) > 4
    prompt = bundle.prompt_ids(bundle.lookup(users[0]["history"])[-20:]) + prefix
    r = tiny_server.post("/v1/completions", {"model": "genrec", "prompt": prompt, "max_tokens": 1, "temperature": 0,
                                             "logprobs": 4 + 1, "return_tokens_as_token_ids": True,
                                             "vllm_xargs": {"genrec_score": 1, "genrec_prefix": prefix}})
    assert r.status_code == 200, r.text
    top = r.json()["choices"][0]["logprobs"]["top_logprobs"][0]
    got = {int(key.split(":")[-1]): v for key, v in top.items()}
    model = AutoModelForCausalLM.from_pretrained(bundle.model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        want = torch.log_softmax(model(torch.tensor([prompt])).logits[0, -1].float(), -1)
    allowed = bundle.trie.allowed_after(prefix).tolist()
    best = sorted(allowed, key=lambda t: -float(want[t]))[:4]
    for t in best:
        assert t in got and abs(got[t] - float(want[t])) < 1e-4, (t, got.get(t), float(want[t]))


# ------------------------------------------------------------------------------------------- recommendations
def recommend(server, body, **kw):
    r = server.post("/v1/recommendations", body, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def test_recommendations_are_distinct_ranked_catalogue_items(tiny_server, bundle, users):
    for u in users[:4]:
        for k in (1, 7, 10):
            out = recommend(tiny_server, {"history": u["history"], "k": k})
            ids = [it["item_id"] for it in out["items"]]
            assert len(ids) == k and len(set(ids)) == k
            assert all(i in bundle._by_id for i in ids) and not set(ids) & set(u["history"])
            scores = [it["score"] for it in out["items"]]
            assert scores == sorted(scores, reverse=True)
            assert out["model"] == "genrec" and out["history_used"] == min(20, len(u["history"]))
            # one engine request per beam per step at most, whatever the fan-out
            assert 1 <= out["decode"]["engine_requests"] <= k * bundle.trie.max_depth


def test_titles_work_like_ids_and_history_can_be_kept(tiny_server, bundle, users):
    u = users[2]
    rows = bundle.lookup(u["history"])
    titles = [bundle.titles[r] if bundle.titles.count(bundle.titles[r]) == 1 else bundle.item_ids[r] for r in rows]
    a = recommend(tiny_server, {"history": u["history"], "k": 5})
    b = recommend(tiny_server, {"history": titles, "k": 5})
    assert a["items"] == b["items"]
    kept = recommend(tiny_server, {"history": u["history"], "k": 5, "exclude_history": False, "exclude": ["i3"]})
    assert kept["excluded"] == 1 and "i3" not in [it["item_id"] for it in kept["items"]]


def test_server_agrees_with_batch_generation(tiny_server, batch_results, users):
    """Same input -> same top-K, whether the request comes over HTTP (concurrently) or from a JSONL file."""
    with cf.ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda u: recommend(tiny_server, {"history": u["history"], "k": 10}), users[:16]))
    for u, out in zip(users[:16], outs, strict=True):
        ref = batch_results[u["user_id"]]
        assert_same_topk([i["item_id"] for i in out["items"]], [i["score"] for i in out["items"]],
                         [i["item_id"] for i in ref["items"]], [i["score"] for i in ref["items"]])


def test_server_agrees_with_hf_reference(tiny_server, bundle, users):
    from transformers import AutoModelForCausalLM

    from generative_rec.decoding.hf import hf_generate_topk
    from generative_rec.serving.request import prepare

    model = AutoModelForCausalLM.from_pretrained(bundle.model_dir, dtype=torch.float32).eval()
    for u in users[4:7]:
        p = prepare(bundle, u["history"], 10)
        ref = hf_generate_topk(model, p.prompt, bundle.trie, 10, bundle.tokenizer.eos_token_id, exclude=p.exclude)
        out = recommend(tiny_server, {"history": u["history"], "k": 10})
        assert_same_topk([bundle._by_id[i["item_id"]] for i in out["items"]], [i["score"] for i in out["items"]],
                         ref.items, ref.scores)


# ------------------------------------------------------------------------------------------- bad input
BAD = [
    ({"history": ["i1", "nope", "zzz"]}, "unknown item(s): 'nope', 'zzz'"),
    ({"history": []}, "history is empty"),
    ({"history": ["i1"], "k": 0}, "k must be at least 1"),
    ({"history": ["i1"], "k": 151}, "larger than the catalogue (150 items)"),
    ({"history": ["i1"], "k": "ten"}, "body.k"),
    ({"history": "i1"}, "body.history"),
    ({"history": [{"id": "i1"}]}, "body.history"),
    ({"history": ["i1"], "k": 3, "exclude_history": "yes"}, "body.exclude_history"),
    ({"history": ["i1"], "kk": 3}, "body.kk"),
    ({"history": ["i1"], "k": 3, "num_beams": 2}, "num_beams must be between"),
    ({"history": ["i1"], "explain": True}, "explanations are not available in this bundle"),
    ({"k": 3}, "body.history"),
]


@pytest.mark.parametrize(("body", "message"), BAD, ids=[m[:24] for _, m in BAD])
def test_bad_requests_are_400_with_a_message(tiny_server, body, message):
    r = tiny_server.post("/v1/recommendations", body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"], r.text


def test_malformed_json_huge_body_and_server_keeps_serving(tiny_server, users):
    r = tiny_server.post("/v1/recommendations", content=b'{"history": ["i1"')
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = tiny_server.post("/v1/recommendations", content=b"not json at all")
    assert r.status_code == 400
    huge = json.dumps({"history": ["i1"] * 200_000, "k": 5}).encode()  # ~1.2 MB
    r = tiny_server.post("/v1/recommendations", content=huge)
    assert r.status_code == 400 and "larger than" in r.json()["error"]["message"]
    r = tiny_server.post("/v1/recommendations", {"history": ["i1"] * 1001})
    assert r.status_code == 400
    assert len(recommend(tiny_server, {"history": users[0]["history"], "k": 3})["items"]) == 3


def test_wrong_api_key_is_401_everywhere(tiny_server, bundle):
    import httpx
    import openai

    r = tiny_server.post("/v1/recommendations", {"history": ["i1"], "k": 3}, api_key="wrong")
    assert r.status_code == 401
    assert httpx.post(f"{tiny_server.base}/v1/recommendations", json={"history": ["i1"]}).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        tiny_server.client(api_key="wrong").completions.create(model="genrec", prompt=[1, 2], max_tokens=2)
    assert tiny_server.client(api_key=API_KEY).models.list().data


def test_openapi_documents_the_route(tiny_server):
    import httpx

    doc = httpx.get(f"{tiny_server.base}/openapi.json").json()
    op = doc["paths"]["/v1/recommendations"]["post"]
    assert "400" in op["responses"] and "/v1/completions" in doc["paths"]
    req = doc["components"]["schemas"]["RecommendationRequest"]["properties"]
    assert {"history", "k", "exclude_history", "explain"} <= set(req)


# ------------------------------------------------------------------------------------------- slow: SmolLM2
@pytest.mark.slow
def test_smollm2_server(smol_server, smol_bundle, users):
    from transformers import AutoModelForCausalLM

    from generative_rec.bundle import Bundle
    from generative_rec.decoding.hf import hf_generate_topk
    from generative_rec.serving.request import prepare

    b = Bundle(smol_bundle)
    model = AutoModelForCausalLM.from_pretrained(b.model_dir, dtype=torch.float32).eval()
    with cf.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda u: recommend(smol_server, {"history": u["history"], "k": 10}), users[:4]))
    for out in outs:
        ids = [i["item_id"] for i in out["items"]]
        assert len(set(ids)) == 10 and all(i in b._by_id for i in ids)
    for u, out in zip(users[:2], outs[:2], strict=True):
        ids = [i["item_id"] for i in out["items"]]
        p = prepare(b, u["history"], 10)
        ref = hf_generate_topk(model, p.prompt, b.trie, 10, b.tokenizer.eos_token_id, exclude=p.exclude)
        assert_same_topk([b._by_id[i] for i in ids], [i["score"] for i in out["items"]], ref.items, ref.scores)
    check_smollm2_explanations(smol_server, b, users[0])
    c = smol_server.client()
    sampled = c.completions.create(model="genrec", prompt=prepare(b, users[0]["history"], 1).prompt, max_tokens=12,
                                   temperature=1.0, n=8,
                                   extra_body={"vllm_xargs": {"genrec_constrained": 1}, "return_token_ids": True})
    assert all(completion_item(b, ch.token_ids) >= 0 for ch in sampled.choices)


def check_smollm2_explanations(server, b, user):
    """``"explain": true`` through the server: a one-line, non-empty text per item, scored by
    ``explain_metrics.faithfulness`` against the history the prompt showed. After 2 training steps the model
    is not expected to be faithful: the measures must be computed and in range, not good."""
    from generative_rec.explain.contract import explain_settings
    from generative_rec.explain.evaluate import claim_stats, explanation_catalogue
    from generative_rec.explain.metrics import Faithfulness, explanation_report, faithfulness

    out = recommend(server, {"history": user["history"], "k": 3, "explain": True})
    items = [b._by_id[i["item_id"]] for i in out["items"]]
    texts = [i["explanation"] for i in out["items"]]
    assert len(set(items)) == 3
    assert all(isinstance(t, str) and t.strip() and "\n" not in t for t in texts), texts
    shown = b.lookup(user["history"])[-explain_settings(b).max_history :]
    cat = explanation_catalogue(b.titles, b.attributes, b.domain)
    faith = [faithfulness(t, shown, i, cat) for t, i in zip(texts, items, strict=True)]
    for f in faith:
        assert isinstance(f, Faithfulness)
        assert set(f.cited_history) <= set(shown)
        assert set(f.hallucinated_attributes) <= set(f.claimed_attributes)
    report = explanation_report(faith) | claim_stats(faith)
    assert report["n"] == 3
    item, attr = report["item_hallucination_rate"], report["attribute_hallucination_rate"]
    assert max(item, attr) <= report["hallucination_rate"] <= min(1.0, item + attr) + 1e-12, report
    assert report["citation_rate"] == sum(f.cites_history for f in faith) / 3, report
    print("SmolLM2 explanations:", texts, {k: round(v, 3) for k, v in report.items()})


def test_serve_refuses_a_logprobs_mode_override(tiny_bundle):
    """Flags after ``--`` go to vLLM unchanged, but not one that would break top-K scoring."""
    from generative_rec.bundle import Bundle
    from generative_rec.errors import ConfigError
    from generative_rec.serving.launch import ServeOptions, check_vllm_args, parse_vllm_args, vllm_argv

    b = Bundle(tiny_bundle)
    check_vllm_args(parse_vllm_args(vllm_argv(b, ServeOptions(bundle=str(tiny_bundle)))))
    args = parse_vllm_args(vllm_argv(b, ServeOptions(bundle=str(tiny_bundle),
                                                     vllm_args=["--logprobs-mode", "raw_logprobs"])))
    with pytest.raises(ConfigError, match="processed_logprobs"):
        check_vllm_args(args)
    assert args.max_logprobs >= 200 + 100 + 1
