"""``genrec generate``: offline batch top-K through vLLM's LLM, streamed with atomic appends, resumable.

The CLI test runs the real command in a subprocess, SIGKILLs it mid-run (and adds a torn line as a
write interrupted half-way would leave), resumes, and checks that every user is in the output exactly
once with the same top-K as an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from vllm_helpers import assert_same_topk, read_jsonl, write_jsonl

pytestmark = pytest.mark.vllm


def many_users(users, copies: int) -> list[dict]:
    return [{**u, "user_id": f"{u['user_id']}-{c}"} for c in range(copies) for u in users]


def check_records(bundle, records, users_by_id, k=10):
    for r in records:
        items = [it["item_id"] for it in r["items"]]
        assert len(items) == k and len(set(items)) == k, r
        assert all(i in bundle._by_id for i in items)
        assert not set(items) & set(users_by_id[r["user_id"]]["history"])
        scores = [it["score"] for it in r["items"]]
        assert scores == sorted(scores, reverse=True)
        assert all(it["title"] == bundle.titles[bundle._by_id[it["item_id"]]] for it in r["items"])


def test_cli_killed_run_resumes_without_loss_or_duplicates(tiny_bundle, tiny_llm, engine_slot, users,
                                                           batch_results, tmp_path):
    from generative_rec.bundle import Bundle
    from generative_rec.generate import GenerateOptions, generate

    bundle = Bundle(tiny_bundle)
    rows = many_users(users, 5)  # 240 users, 4 per window: the run takes long enough to be killed mid-way
    inp = write_jsonl(tmp_path / "users.jsonl", rows)
    out = tmp_path / "recs.jsonl"
    engine_slot.release()  # the CLI starts its own engine
    engine_slot.take("cli")
    cmd = [sys.executable, "-m", "generative_rec.cli", "generate", "--bundle", str(tiny_bundle), "--input", str(inp),
           "--output", str(out), "--batch-size", "4", "--max-model-len", "1024"]
    log = open(tmp_path / "cli.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 400 and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 12:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed:\n" + (tmp_path / "cli.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert "generate:" in (tmp_path / "cli.log").read_text()  # the progress bar
    before = read_jsonl(out)
    assert 12 <= len(before) < len(rows)
    with open(out, "ab") as f:  # what a kill in the middle of a write would leave
        f.write(b'{"user_id": "torn", "ite')

    s = generate(GenerateOptions(bundle=str(tiny_bundle), input=str(inp), output=str(out), batch_size=16,
                                 resume=True), llm=tiny_llm.get(), progress=False)
    assert s["skipped_done"] == len(before) and s["written"] == len(rows) - len(before)
    after = read_jsonl(out)
    ids = [r["user_id"] for r in after]
    assert len(ids) == len(set(ids)) == len(rows)  # nothing lost, nothing twice
    assert set(ids) == {r["user_id"] for r in rows}
    assert after[: len(before)] == before  # the killed run's lines are kept as they were
    by_id = {r["user_id"]: r for r in rows}
    check_records(bundle, after, by_id)
    for r in after:  # same top-K as the uninterrupted run (batch_results) whatever the window a user was in
        ref = batch_results[r["user_id"].rsplit("-", 1)[0]]
        assert_same_topk([i["item_id"] for i in r["items"]], [i["score"] for i in r["items"]],
                         [i["item_id"] for i in ref["items"]], [i["score"] for i in ref["items"]])


def test_batch_records_are_catalogue_items(tiny_bundle, batch_results, users):
    from generative_rec.bundle import Bundle

    check_records(Bundle(tiny_bundle), list(batch_results.values()), {u["user_id"]: u for u in users})
    assert len(batch_results) == len(users)


def test_titles_and_per_line_options(tiny_bundle, tiny_llm, users, tmp_path):
    from generative_rec.bundle import Bundle
    from generative_rec.generate import GenerateOptions, generate

    b = Bundle(tiny_bundle)
    u = users[0]
    titles = [b.titles[b._by_id[i]] for i in u["history"]]
    rows = [{"user_id": "ids", "history": u["history"]},
            {"user_id": "titles", "history": [t if b.titles.count(t) == 1 else i for t, i in zip(titles, u["history"], strict=True)]},
            {"user_id": "k3", "history": u["history"], "k": 3},
            {"user_id": "keep", "history": u["history"], "exclude_history": False, "k": 5}]
    out = tmp_path / "o.jsonl"
    generate(GenerateOptions(bundle=str(tiny_bundle), input=str(write_jsonl(tmp_path / "i.jsonl", rows)),
                             output=str(out)), llm=tiny_llm.get(), progress=False)
    rec = {r["user_id"]: r for r in read_jsonl(out)}
    assert [i["item_id"] for i in rec["ids"]["items"]] == [i["item_id"] for i in rec["titles"]["items"]]
    assert len(rec["k3"]["items"]) == 3 and len(rec["keep"]["items"]) == 5
    assert [r["user_id"] for r in read_jsonl(out)] == ["ids", "titles", "k3", "keep"]  # input order


def test_invalid_lines_are_reported_with_line_numbers(tiny_bundle, tiny_llm, users, tmp_path):
    from generative_rec.errors import DataError
    from generative_rec.generate import GenerateOptions, generate

    good = users[1]
    inp = tmp_path / "bad.jsonl"
    inp.write_text("\n".join([
        '{"user_id": "a", "history": ["i1", "nope"]}',
        '{"user_id": "b", "history": []}',
        '{"user_id": "c", "history": ["i1"], "k": 0}',
        '{"user_id": "d", "history": ["i1"',
        '{"user_id": "e", "history": "i1"}',
        '{"user_id": "f", "history": ["i1"], "k": 100000}',
        f'{{"user_id": "ok", "history": {list(good["history"])!r}}}'.replace("'", '"'),
        '{"user_id": "ok", "history": ["i1"]}',
    ]) + "\n")
    o = GenerateOptions(bundle=str(tiny_bundle), input=str(inp), output=str(tmp_path / "o.jsonl"))
    with pytest.raises(DataError) as e:
        generate(o, progress=False)  # fails before any engine starts
    msg = str(e.value)
    for needle in ("line 1", "'nope'", "line 2", "empty", "line 3", "line 4", "malformed JSON", "7 invalid", "(and 2 more)"):
        assert needle in msg, msg
    assert not (tmp_path / "o.jsonl").exists()
    o.skip_invalid = True
    generate(o, llm=tiny_llm.get(), progress=False)
    recs = read_jsonl(tmp_path / "o.jsonl")
    assert [("error" in r) for r in recs] == [True] * 6 + [False, True]
    assert "repeats line 7" in recs[-1]["error"] and "larger than the catalogue" in recs[5]["error"]


def test_existing_output_needs_resume_or_overwrite(tiny_bundle, users, tmp_path):
    from generative_rec.generate import GenerateOptions, generate

    out = tmp_path / "o.jsonl"
    out.write_text("")
    with pytest.raises(FileExistsError):
        generate(GenerateOptions(bundle=str(tiny_bundle), input=str(write_jsonl(tmp_path / "i.jsonl", users[:2])),
                                 output=str(out)), progress=False)


def test_lora_needs_a_saved_base_and_no_new_tokens(tiny_bundle):
    from generative_rec.bundle import Bundle
    from generative_rec.decoding.vllm_engine import EngineOptions, base_model_for
    from generative_rec.errors import ConfigError

    b = Bundle(tiny_bundle)
    assert base_model_for(b, EngineOptions()) == str(b.model_dir)  # the merged model by default
    with pytest.raises(ConfigError, match="--base-model"):
        base_model_for(b, EngineOptions(enable_lora=True))
    b.index.new_tokens = ["<tok_1>"]
    with pytest.raises(ConfigError, match="adds 1 tokens"):
        base_model_for(b, EngineOptions(enable_lora=True, base_model="/nowhere"))


@pytest.mark.slow
def test_smollm2_lora_adapter_matches_hf_reference(smol_bundle, engine_slot, users, tmp_path):
    """--enable-lora: the adapter served on its base model gives the HF reference top-K (merged model)."""
    import torch
    from transformers import AutoModelForCausalLM
    from vllm_helpers import SMOLLM2

    from generative_rec.bundle import Bundle
    from generative_rec.decoding.hf import hf_generate_topk
    from generative_rec.decoding.vllm_engine import EngineOptions
    from generative_rec.generate import GenerateOptions, generate
    from generative_rec.serving.request import prepare

    engine_slot.release()
    engine_slot.take("lora")
    b = Bundle(smol_bundle)
    out = tmp_path / "o.jsonl"
    generate(GenerateOptions(bundle=str(smol_bundle), input=str(write_jsonl(tmp_path / "i.jsonl", users[:3])),
                             output=str(out), k=5,
                             engine=EngineOptions(enable_lora=True, base_model=str(SMOLLM2))), progress=False)
    model = AutoModelForCausalLM.from_pretrained(b.model_dir, dtype=torch.float32).eval()
    for u, r in zip(users[:3], read_jsonl(out), strict=True):
        p = prepare(b, u["history"], 5)
        ref = hf_generate_topk(model, p.prompt, b.trie, 5, b.tokenizer.eos_token_id, exclude=p.exclude)
        assert_same_topk([b._by_id[i["item_id"]] for i in r["items"]], [i["score"] for i in r["items"]],
                         ref.items, ref.scores, tol=5e-4)  # merging in fp32 moves log-probs by ~1e-5
