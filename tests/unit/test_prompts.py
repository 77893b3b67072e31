"""Templates and rendering: loss only on targets; packed sequences see exactly the inference prompt."""

from __future__ import annotations

import pytest
from helpers import sequential_setup

from generative_rec.errors import ConfigError
from generative_rec.prompts import IGNORE, Renderer, Template, load_templates


@pytest.fixture(scope="module")
def setup(tiny_data, tmp_path_factory):
    data, tok, index = sequential_setup(tiny_data, tmp_path_factory.mktemp("tok"))
    r = Renderer(tok, index.token_ids(tok), data.titles, "movie")
    return data, tok, index, r


def test_shipped_templates_load_with_one_heldout_per_task():
    t = load_templates()
    assert {"next_item", "item_title"} <= set(t)
    for task, ts in t.items():
        assert sum(x.heldout for x in ts) == 1, task
        assert len([x for x in ts if not x.heldout]) >= 3, task  # several paraphrases
    assert any(x.sequence_capable for x in t["next_item"])
    assert any(not x.sequence_capable for x in t["next_item"])


def test_bad_template_files(tmp_path):
    (tmp_path / "a.yaml").write_text("task: next_item\ntemplates:\n  - name: x\n    prompt: 'no history here'\n")
    with pytest.raises(ConfigError, match="exactly one"):
        load_templates(tmp_path)
    (tmp_path / "a.yaml").write_text("task: next_item\ntemplates:\n  - name: x\n    prompt: '{history} {nope}'\n")
    with pytest.raises(ConfigError, match="unknown placeholder"):
        load_templates(tmp_path)
    (tmp_path / "a.yaml").write_text("templates: []\n")
    with pytest.raises(ConfigError, match="needs 'task'"):
        load_templates(tmp_path)


@pytest.mark.parametrize("name", ["compact", "list-ids", "list-titles", "list-ids-2"])
def test_packed_sequence_positions_see_the_inference_prompt(setup, name):
    data, tok, index, r = setup
    t = next(x for x in load_templates()["next_item"] if x.name == name)
    seq = data.sequences[3][:6]
    ids, labels = r.sequence_example(t, seq, min_context=1)
    # item j's ID starts right after exactly prompt_ids(t, seq[:j]) and is the only labelled part
    for n in range(1, len(seq)):
        prompt = r.prompt_ids(t, seq[:n])
        lo, hi = len(prompt), len(prompt) + len(r.id_tokens[seq[n]])
        assert ids[:lo] == prompt, f"context of item {n}"
        assert ids[lo:hi] == labels[lo:hi] == r.id_tokens[seq[n]]
    assert sum(x != IGNORE for x in labels) == sum(len(r.id_tokens[i]) for i in seq[1:])


def test_single_example_labels_only_target_and_eos(setup):
    data, tok, index, r = setup
    t = next(x for x in load_templates()["next_item"] if x.name == "question")
    ids, labels = r.next_item_example(t, data.sequences[0][:4], int(data.sequences[0][4]))
    tgt = [x for x in labels if x != IGNORE]
    assert tgt == r.id_tokens[data.sequences[0][4]] + [tok.eos_token_id]
    assert ids[-len(tgt):] == tgt
    assert ids[: len(ids) - len(tgt)] == r.prompt_ids(t, data.sequences[0][:4])


def test_item_title_example(setup):
    data, tok, index, r = setup
    t = Template(task="item_title", name="x", prompt="{domain} {id} is titled: ", target="{title}")
    ids, labels = r.item_example(t, 5)
    tgt = [x for x in labels if x != IGNORE]
    assert tok.decode(tgt[:-1]) == data.titles[5] and tgt[-1] == tok.eos_token_id


def test_ids_are_tokenised_on_their_own(setup):
    data, tok, index, r = setup
    t = Template(task="next_item", name="x", prompt="H:{history}", sep="")
    p = r.prompt_ids(t, [0, 1])
    assert p == r.bos + r.text("H:") + r.id_tokens[0] + r.id_tokens[1]
