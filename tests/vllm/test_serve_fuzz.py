"""Property-based HTTP fuzzing of the real server (schemathesis on its own ``/openapi.json``).

The schema is read from the running ``tiny_server`` (a real ``genrec serve``: vLLM's app, engine and our
router), and schemathesis draws request bodies for ``POST /v1/recommendations`` and ``POST /v1/completions``
from it, valid (positive) and schema-violating (negative) ones alike. Hypothesis strategies of our own are
mixed in where the schema alone would rarely reach the interesting code:

- recommendations: history / exclude drawn from real catalogue ids and titles (and near misses), ``k`` and
  ``num_beams`` from the boundaries (0, 1, catalogue size, ``--max-k``, ``MAX_BEAMS``, huge, negative), so that
  many requests get past validation into the trie beam search;
- completions: ``vllm_xargs`` with the genrec keys (``genrec_constrained``, ``genrec_score``,
  ``genrec_exclude``, ``genrec_prefix``) holding hostile values: flags as strings / numbers / lists, unknown
  and real item ids, every item, too many items, huge / negative / leaf / off-trie prefixes; the model name is
  usually the served one and the prompt usually one the tiny model's vocabulary admits, so the trie logits
  processor actually runs in the engine; half the cases are small bodies with one genrec mode and up to three
  options that act on the same logits row (structured outputs, ``allowed_token_ids``, ``logit_bias``, beam
  search, streaming, ...), see :func:`completion_cases`.

Bounded, to keep the file at a few minutes on a 2-core CPU: in completion bodies ``n`` is at most 4, a prompt
list holds at most 4 prompts, and ``max_tokens`` / ``min_tokens`` that the engine would accept are at most
16 (values the server must reject, above ``--max-model-len`` or negative, are kept; an explicit
``max_tokens: null``, which means "up to the context length", becomes 16). These change how long a request
decodes, not which code paths it reaches.

Every case is sent with the API key; the check is the property the issue asks for: no response >= 500 (for
``"stream": true`` also no error event with a 5xx code inside the 200 stream). All failures are collected and
reported together with their bodies; the number of cases sent is asserted (>= 200 per route), and afterwards
``/health`` answers and ordinary requests still work. Hypothesis runs derandomized (same cases every run).
What the fuzz found is pinned by the hand-written regression tests at the end of the file.

The file name sorts right before ``test_server.py`` (after ``test_scoring.py``) on purpose: both use the
session's ``tiny_server``, and conftest's one-engine slot stops that server whenever another engine opens.
Placed before ``test_parity.py`` (offline engine) this file would leave ``test_server.py`` a stopped server;
placed after ``test_server.py`` it would get one itself (its slow SmolLM2 test starts ``smol_server``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from vllm_helpers import API_KEY

pytestmark = pytest.mark.vllm

N_EXAMPLES = 300  # hypothesis examples per route
MIN_SENT = 200  # the floor: cases actually sent per route
MAX_N = 4
MAX_TOKENS = 16
MAX_PROMPTS = 4
MAX_MODEL_LEN = 1024  # conftest's Server: --max-model-len 1024
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    from generative_rec.bundle import Bundle

    return Bundle(tiny_bundle)


@pytest.fixture(scope="module")
def schema(tiny_server):
    import schemathesis

    return schemathesis.openapi.from_url(f"{tiny_server.base}/openapi.json")


@dataclass
class Report:
    route: str
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    with_genrec_xargs: int = 0
    seconds: float = 0.0
    messages: Counter = field(default_factory=Counter)  # 4xx error messages (their start), for the log

    def summary(self) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (f"{self.route}: {self.sent} cases sent in {self.seconds:.0f} s ({codes}); "
                f"{self.with_genrec_xargs} with genrec vllm_xargs; {len(self.failures)} failures")

    def details(self) -> str:
        return "\n".join(f"  {n:4d} x {m}" for m, n in self.messages.most_common(25))


def stream_server_errors(text: str) -> list[str]:
    """Error events with a 5xx code inside a ``text/event-stream`` body (sent after the 200 status line)."""
    bad = []
    for line in text.splitlines():
        if not line.startswith("data:") or line.strip() == "data: [DONE]":
            continue
        try:
            event = json.loads(line[5:])
        except ValueError:
            continue
        err = event.get("error") if isinstance(event, dict) else None
        code = err.get("code") if isinstance(err, dict) else None
        if isinstance(code, int) and code >= 500:
            bad.append(line[:500])
    return bad


def run_fuzz(server, route: str, strategy) -> Report:
    """Send ``N_EXAMPLES`` drawn cases; record every status and every failure (nothing stops the run)."""
    import requests
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings

    report = Report(route)
    session = requests.Session()

    @settings(max_examples=N_EXAMPLES, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(strategy)
    def one(case):
        body = json.dumps(case.body, default=repr)[:2000] if hasattr(case, "body") else "?"
        report.with_genrec_xargs += bool(isinstance(case.body, dict) and isinstance(case.body.get("vllm_xargs"), dict)
                                         and any(str(k).startswith("genrec_") for k in case.body["vllm_xargs"]))
        try:
            resp = case.call(base_url=server.base, session=session, headers=AUTH, timeout=300)
        except Exception as e:  # a dropped connection is a failure too (the server died or hung up)
            report.failures.append(f"{type(e).__name__}: {e}\n  body: {body}")
            return
        report.sent += 1
        report.statuses[resp.status_code] = report.statuses.get(resp.status_code, 0) + 1
        if 400 <= resp.status_code < 500:
            try:
                msg = str(resp.json()["error"]["message"])
            except (ValueError, KeyError, TypeError):
                msg = resp.text
            report.messages[msg[:70]] += 1
        if resp.status_code >= 500:
            report.failures.append(f"HTTP {resp.status_code}: {resp.text[:500]}\n  body: {body}")
        elif "text/event-stream" in resp.headers.get("content-type", ""):
            for err in stream_server_errors(resp.text):
                report.failures.append(f"HTTP 200 stream with a server error: {err}\n  body: {body}")

    t0 = time.perf_counter()
    one()
    report.seconds = time.perf_counter() - t0
    print(report.summary())
    print(report.details())
    return report


def assert_clean(report: Report, server) -> None:
    assert report.sent >= MIN_SENT, report.summary()
    if report.failures:
        shown = "\n".join(report.failures[:20])
        pytest.fail(f"{report.summary()}\n{shown}\n--- server log (tail) ---\n{server.tail(3000)}")


def assert_still_serving(server, users) -> None:
    import httpx

    assert httpx.get(f"{server.base}/health", timeout=30).status_code == 200, server.tail()
    r = server.post("/v1/recommendations", {"history": users[0]["history"], "k": 5})
    assert r.status_code == 200 and len(r.json()["items"]) == 5, r.text


# ------------------------------------------------------------------------------------------- strategies
def boundary_ints(*extra: int):
    from hypothesis import strategies as st

    edges = [-(2**63), -(2**31), -1, 0, 1, 2, 2**31 - 1, 2**63 - 1, 2**64, 10**30, *extra]
    return st.one_of(st.sampled_from(edges), st.integers(-5, 210))


def catalogue_keys(bundle):
    """Item keys: real ids, real titles (duplicated titles included), and near misses."""
    from hypothesis import strategies as st

    ids, titles = list(bundle.item_ids), list(bundle.titles)
    near = [i.upper() for i in ids[:5]] + [f" {ids[1]}", f"{ids[2]} ", ids[3][:-1], "", "\x00", "<unk>", "i-1",
                                          "i150", "i1e3", "\u202e" + ids[4], "Heat" * 1000]
    return st.one_of(st.sampled_from(ids), st.sampled_from(titles), st.sampled_from(near),
                     st.integers(-3, 200), st.text(max_size=12))


def recommendation_cases(op, bundle):
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    ids = list(bundle.item_ids)
    unique_titles = [t for t in bundle.titles if bundle.titles.count(t) == 1]
    n = bundle.num_items
    valid = st.sampled_from(ids + unique_titles)
    hostile = st.one_of(
        st.lists(catalogue_keys(bundle), max_size=30),
        st.just(ids),  # every item: nothing left to recommend after excluding the history
        st.just(ids[:-3]),
        st.integers(995, 1001).map(lambda m: [ids[j % n] for j in range(m)]),  # around MAX_HISTORY_ITEMS
    )
    histories = st.one_of(st.lists(valid, min_size=1, max_size=30), st.lists(valid, min_size=1, max_size=30),
                          hostile)
    excludes = st.one_of(st.lists(st.sampled_from(ids), max_size=10), hostile)
    ks = st.one_of(st.integers(1, 12), st.integers(1, 12), boundary_ints(n - 1, n, n + 1, 99, 100, 101))
    beams = st.one_of(st.none(), st.integers(1, 40), boundary_ints(199, 200, 201))

    @st.composite
    def cases(draw):
        mode = draw(st.sampled_from([GenerationMode.POSITIVE, GenerationMode.POSITIVE, GenerationMode.NEGATIVE]))
        case = draw(op.as_strategy(generation_mode=mode))
        if isinstance(case.body, dict) and draw(st.integers(0, 9)) < 7:  # most bodies: reach the beam search
            body = case.body
            body["history"] = draw(histories)
            for key, strategy, percent in (("k", ks, 90), ("exclude", excludes, 30), ("num_beams", beams, 30),
                                           ("explain", st.just(False), 80)):
                if draw(st.integers(0, 99)) < percent:
                    body[key] = draw(strategy)
        return case

    return cases()


def xargs_strategies(bundle):
    """``vllm_xargs`` with the genrec keys: ``hostile`` (any key, any value, a stray key or two) and ``engine``
    (one mode switched on, mostly valid exclusions and prefixes, so the request reaches the engine)."""
    from hypothesis import strategies as st

    ids = list(bundle.item_ids)
    trie = bundle.trie
    seqs = [trie.sequence(i) for i in range(0, bundle.num_items, 7)]
    flags = st.one_of(st.just(1), st.just(True), st.sampled_from([1, 0, True, False, "1", "true", " TRUE ", "yes",
                                                                  "no", "0", "", 2, -1, 0.5, [], [1], "null",
                                                                  2**64 - 1, 2**64]),
                      st.text(max_size=5))
    proper = st.sampled_from(seqs).flatmap(lambda s: st.integers(0, len(s) - 1).map(lambda d: s[:d]))
    prefixes = st.one_of(
        st.sampled_from(seqs).flatmap(lambda s: st.integers(0, len(s)).map(lambda d: s[:d])),  # proper prefix, leaf
        st.lists(boundary_ints(*trie.token[:8].tolist()), max_size=5),
        st.integers(60, 70).map(lambda m: [int(trie.token[0])] * m),  # around MAX_PREFIX
        st.sampled_from(["12", "", [1.5], ["a"], [True], 7]),
    )
    some_ids = st.lists(st.sampled_from(ids), max_size=20)
    excludes = st.one_of(
        some_ids,
        st.lists(st.one_of(st.sampled_from(ids), st.integers(-2, 200), st.floats(allow_nan=False,
                                                                                   allow_infinity=False),
                           st.text(max_size=6)), max_size=6),
        st.just(ids),  # every item
        st.just(ids[1:]),  # all but one: the constrained completion has one choice
        st.sampled_from([ids[0], 3, 3.0, "", []]),
        st.just(["i1"] * 10_001),  # over MAX_EXCLUDE
    )
    values = {"genrec_constrained": flags, "genrec_score": flags, "genrec_exclude": excludes,
              "genrec_prefix": prefixes}
    other = st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=8), st.integers(), st.floats(
        allow_nan=False, allow_infinity=False), st.sampled_from([2**64 - 1, 2**64, -(2**63) - 1])), max_size=2)

    @st.composite
    def hostile(draw):
        keys = draw(st.lists(st.sampled_from(sorted(values)), min_size=1, max_size=4, unique=True))
        return {**draw(other), **{k: draw(values[k]) for k in keys}}

    @st.composite
    def engine(draw):
        mode = draw(st.sampled_from(["genrec_constrained", "genrec_score"]))
        out = {mode: draw(st.sampled_from([1, True, "1", "true"]))}
        if draw(st.booleans()):
            out["genrec_exclude"] = draw(st.one_of(some_ids, some_ids, excludes))
        if mode == "genrec_score" and draw(st.booleans()):
            out["genrec_prefix"] = draw(st.one_of(proper, proper, prefixes))
        return out

    return hostile(), engine()


def bound(body: dict) -> None:
    """Keep decoding work small (see the module docstring): n, number of prompts, tokens per completion."""
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > MAX_N:
        body["n"] = n % (MAX_N + 1)
    for key in ("max_tokens", "min_tokens"):
        v = body.get(key, 0)
        if key in body and v is None and key == "max_tokens":
            body[key] = MAX_TOKENS
        elif isinstance(v, int) and not isinstance(v, bool) and MAX_TOKENS < v <= MAX_MODEL_LEN:
            body[key] = v % (MAX_TOKENS + 1)
    p = body.get("prompt")
    if isinstance(p, list) and p and all(isinstance(x, (list, str)) for x in p):
        body["prompt"] = p[:MAX_PROMPTS]


def completion_cases(op, bundle, users):
    """Two lanes. Schema lane: schemathesis' body (valid or not), usually with the served model, an admissible
    prompt and hostile genrec ``vllm_xargs`` put in. Engine lane: the same case's body replaced by a small one
    (served model, admissible prompt, one genrec mode with mostly valid arguments) plus up to three request
    options that act on the same logits row as the trie processor, or bypass it (structured outputs,
    ``allowed_token_ids``, ``logit_bias``, ``bad_words``, beam search, streaming, ...)."""
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    vocab = len(bundle.tokenizer)
    good_prompts = st.one_of(
        st.sampled_from([bundle.prompt_ids(bundle.lookup(u["history"])[-20:]) for u in users[:8]]),
        st.lists(st.integers(0, vocab - 1), min_size=1, max_size=40),
        st.lists(st.sampled_from([bundle.prompt_ids([0]), bundle.prompt_ids([1, 2])]), min_size=1, max_size=3),
    )
    prompts = st.one_of(good_prompts, st.lists(st.integers(0, vocab + 5), min_size=1, max_size=3),
                        st.text(min_size=1, max_size=40))
    hostile_xargs, engine_xargs = xargs_strategies(bundle)
    id_tokens = sorted({int(t) for t in bundle.trie.token[1:]})
    tokens = st.one_of(st.sampled_from(id_tokens), st.integers(0, vocab + 2))
    ids_text = list(bundle.index.id_texts[:20])
    interplay = {
        "structured_outputs": st.one_of(
            st.fixed_dictionaries({"choice": st.lists(st.sampled_from(ids_text + ["abc", ""]), max_size=3)}),
            st.fixed_dictionaries({"regex": st.sampled_from(["[0-9 ]+", "[a-z]+", " 0[0-9]{2}", "(", ""])}),
            st.just({"json": {"type": "object"}}), st.just({"json_object": True})),
        "response_format": st.sampled_from([{"type": "json_object"}, {"type": "text"},
                                            {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}]),
        "allowed_token_ids": st.lists(tokens, max_size=4),
        "logit_bias": st.dictionaries(tokens.map(str), st.sampled_from([-100, -1.5, 0, 5, 100]), max_size=3),
        "bad_words": st.lists(st.sampled_from(ids_text + [" 0", "0", ""]), max_size=3),
        "stop_token_ids": st.lists(tokens, max_size=3),
        "stop": st.lists(st.sampled_from(ids_text + ["0", " "]), max_size=2),
        "use_beam_search": st.booleans(),
        "stream": st.booleans(),
        "echo": st.booleans(),
        "logprobs": st.sampled_from([None, -1, 0, 1, 5, 128, 300, 301, 302]),
        "prompt_logprobs": st.sampled_from([None, -1, 0, 3]),
        "min_tokens": st.integers(0, 3),
        "ignore_eos": st.booleans(),
        "n": st.integers(1, MAX_N),
        "temperature": st.sampled_from([0, 0.0, 1e-6, 0.7, 2.0]),
        "top_k": st.sampled_from([-1, 0, 1, 2]),
        "seed": st.integers(0, 3),
    }
    options = st.lists(st.sampled_from(sorted(interplay)), max_size=3, unique=True)
    object_fields = ["structured_outputs", "response_format", "stream_options", "repetition_detection",
                     "kv_transfer_params", "logit_bias", "vllm_xargs"]  # CompletionRequest's object-typed fields
    not_objects = st.one_of(st.lists(st.one_of(st.integers(), st.text(max_size=4), st.just({})), max_size=2),
                            st.text(max_size=6), st.integers(), st.booleans(), st.floats(allow_nan=False,
                                                                                        allow_infinity=False))

    @st.composite
    def cases(draw):
        mode = draw(st.sampled_from([GenerationMode.POSITIVE, GenerationMode.POSITIVE, GenerationMode.NEGATIVE]))
        case = draw(op.as_strategy(generation_mode=mode))
        if not isinstance(case.body, dict):
            return case
        body = case.body
        if draw(st.booleans()):  # engine lane
            body.clear()
            body.update(model="genrec", prompt=draw(good_prompts), max_tokens=draw(st.integers(1, MAX_TOKENS)),
                        vllm_xargs=draw(engine_xargs))
            if "genrec_score" in body["vllm_xargs"]:
                body.update(temperature=0, logprobs=draw(st.sampled_from([1, 2, 5, 11, 129, 300])))
            for key in draw(options):
                body[key] = draw(interplay[key])
            if draw(st.integers(0, 3)) == 0:  # a grammar over the same row as the trie: the likeliest clash
                key = draw(st.sampled_from(["structured_outputs", "response_format"]))
                body[key] = draw(interplay[key])
        else:  # schema lane
            if draw(st.integers(0, 9)) < 8:
                body["model"] = "genrec"
            if draw(st.integers(0, 9)) < 7:
                body["prompt"] = draw(prompts)
            if draw(st.integers(0, 9)) < 8:
                body["vllm_xargs"] = draw(hostile_xargs)
            if draw(st.integers(0, 9)) < 3:  # an object-typed field of the schema holding a non-object
                body[draw(st.sampled_from(object_fields))] = draw(not_objects)
        bound(body)
        return case

    return cases()


# ------------------------------------------------------------------------------------------- the fuzz
def test_fuzz_recommendations(tiny_server, schema, bundle, users):
    op = schema["/v1/recommendations"]["POST"]
    report = run_fuzz(tiny_server, "POST /v1/recommendations", recommendation_cases(op, bundle))
    assert report.statuses.get(200, 0) >= 20, report.summary()  # the strategies do reach the beam search
    assert_clean(report, tiny_server)
    assert_still_serving(tiny_server, users)


def test_fuzz_completions_with_vllm_xargs(tiny_server, schema, bundle, users):
    op = schema["/v1/completions"]["POST"]
    report = run_fuzz(tiny_server, "POST /v1/completions", completion_cases(op, bundle, users))
    assert report.with_genrec_xargs >= MIN_SENT // 2, report.summary()
    assert report.statuses.get(200, 0) >= 20, report.summary()
    assert_clean(report, tiny_server)
    assert_still_serving(tiny_server, users)
    c = tiny_server.client()  # a constrained completion still yields a catalogue item
    prompt = bundle.prompt_ids(bundle.lookup(users[0]["history"])[-20:])
    out = c.completions.create(model="genrec", prompt=prompt, max_tokens=12, temperature=0,
                               extra_body={"vllm_xargs": {"genrec_constrained": True}, "return_token_ids": True})
    toks = list(out.choices[0].token_ids)
    assert bundle.trie.item_of(toks[:-1] if toks[-1] == bundle.tokenizer.eos_token_id else toks) >= 0



# ------------------------------------------------------------------------------------------- regressions
# What the fuzz found, as hand-written cases (bench/results/robustness.md, "HTTP").
@pytest.mark.parametrize("value", [[1], "json", 3, True, [{"choice": ["a"]}]], ids=["list", "str", "int", "bool",
                                                                                      "list-of-object"])
def test_structured_outputs_that_is_not_an_object_is_400(tiny_server, bundle, value):
    """Finding 1 (vLLM 0.32's request validation): ``structured_outputs`` must be an object; anything else
    raised ``AttributeError`` in a before-validator: HTTP 500 on /v1/completions and /v1/chat/completions."""
    r = tiny_server.post("/v1/completions", {"model": "genrec", "prompt": bundle.prompt_ids([0]), "max_tokens": 2,
                                             "structured_outputs": value})
    assert r.status_code == 400, r.text
    assert "structured_outputs must be an object" in r.json()["error"]["message"], r.text
    r = tiny_server.post("/v1/chat/completions", {"model": "genrec", "messages": [{"role": "user", "content": "hi"}],
                                                  "max_tokens": 2, "structured_outputs": value})
    assert r.status_code == 400, r.text
    r = tiny_server.post("/v1/completions", {"model": "genrec", "prompt": [1, 2], "structured_outputs": value},
                         api_key="wrong")
    assert r.status_code == 401  # the key is checked first


STRUCTURED = [
    ({"structured_outputs": {"choice": ["005", "088"]}}, {"genrec_constrained": 1}),
    ({"structured_outputs": {"regex": "[a-z]+"}}, {"genrec_constrained": "true"}),
    ({"structured_outputs": {"json": {"type": "object"}}}, {"genrec_constrained": 1, "genrec_exclude": ["i1"]}),
    ({"response_format": {"type": "json_object"}}, {"genrec_constrained": 1}),
    ({"response_format": {"type": "json_object"}, "temperature": 0, "logprobs": 3}, {"genrec_score": 1}),
]


@pytest.mark.parametrize(("options", "xargs"), STRUCTURED, ids=["choice", "regex", "json", "json_object", "score"])
def test_structured_outputs_with_the_trie_is_400(tiny_server, bundle, users, options, xargs):
    """Finding 2: structured outputs together with ``genrec_constrained`` / ``genrec_score``. The grammar's
    mask and the trie's left no allowed token; xgrammar then rejected the sampled one and the request ended
    with HTTP 500 (an error event with code 500 inside a 200 stream). Now the processor refuses the
    combination (400); each alone still works."""
    prompt = bundle.prompt_ids(bundle.lookup(users[0]["history"])[-20:])
    body = {"model": "genrec", "prompt": prompt, "max_tokens": 6, **options, "vllm_xargs": xargs}
    r = tiny_server.post("/v1/completions", body)
    assert r.status_code == 400, r.text
    assert "cannot be combined" in r.json()["error"]["message"], r.text
    streamed = tiny_server.post("/v1/completions", {**body, "stream": True})
    assert streamed.status_code in (200, 400) and not stream_server_errors(streamed.text), streamed.text
    assert "cannot be combined" in streamed.text, streamed.text
    without_grammar = {k: v for k, v in body.items() if k not in ("structured_outputs", "response_format")}
    assert tiny_server.post("/v1/completions", without_grammar).status_code == 200
    assert tiny_server.post("/v1/completions", {**body, "vllm_xargs": {}}).status_code == 200


def test_seed_on_the_cpu_engine_is_400(tiny_server, bundle):
    """Finding 3 (tests/vllm/test_catalogue_reload.py under 32 clients): a seeded completion whose prefill is
    chunked kills vLLM 0.32's CPU engine (``CPU Generator does not use offset``). On a CPU build the server
    refuses ``seed`` up front; the same request without it is served."""
    from generative_rec.decoding.vllm_engine import is_cpu_build

    body = {"model": "genrec", "prompt": bundle.prompt_ids([0]), "max_tokens": 2}
    r = tiny_server.post("/v1/completions", {**body, "seed": 3})
    if is_cpu_build():
        assert r.status_code == 400, r.text
        assert "seed is not supported on the CPU engine" in r.json()["error"]["message"], r.text
        chat = {"model": "genrec", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "seed": 1}
        assert tiny_server.post("/v1/chat/completions", chat).status_code == 400
    else:
        assert r.status_code == 200, r.text
    assert tiny_server.post("/v1/completions", {**body, "seed": None}).status_code == 200
    assert tiny_server.post("/v1/completions", body).status_code == 200
