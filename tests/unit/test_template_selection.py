"""Which templates a run trains on: ``prompts.templates`` pins templates per task (training.select_templates)."""

from __future__ import annotations

import logging
import re
import shutil

import pytest
from helpers import REPO

from generative_rec.config import load_config
from generative_rec.errors import ConfigError
from generative_rec.prompts import load_templates
from generative_rec.training import select_templates

DEMO = REPO / "train" / "configs" / "demo_cpu.yaml"
README_MIX = "prompts.tasks={next_item: 1.0, explain: 0.3}"  # the README's explanation command


def keys(selected: dict, task: str) -> list[str]:
    return [t.key for t in selected[task]]


def test_readme_explain_mix_on_the_demo_config_trains_every_explain_template(caplog):
    """demo_cpu.yaml pins [next_item/compact]; mixing in explain must not stop with "no templates"."""
    cfg = load_config(DEMO, [README_MIX])
    assert cfg.prompts.templates == ["next_item/compact"]
    with caplog.at_level(logging.INFO, logger="generative_rec.training"):
        selected = select_templates(cfg)
    assert keys(selected, "next_item") == ["next_item/compact"]  # the pin still holds for its task
    own = [t.key for t in load_templates()["explain"] if not t.heldout]
    assert keys(selected, "explain") == own and len(own) == 4 and "explain/heldout-justify" not in own
    picked = [r for r in caplog.records if r.levelno == logging.INFO and "names no explain template" in r.message]
    assert len(picked) == 1 and all(k in picked[0].message for k in own)
    assert not any("names no next_item" in r.message for r in caplog.records)


def test_a_pinned_template_of_the_task_still_narrows_it(caplog):
    cfg = load_config(DEMO, [README_MIX, "prompts.templates=[next_item/compact, explain/why]"])
    with caplog.at_level(logging.INFO, logger="generative_rec.training"):
        selected = select_templates(cfg)
    assert keys(selected, "next_item") == ["next_item/compact"] and keys(selected, "explain") == ["explain/why"]
    assert not any("names no" in r.message for r in caplog.records)


def test_no_pin_trains_every_template_that_is_not_held_out():
    selected = select_templates(load_config(None, [README_MIX]))
    for task, ts in load_templates().items():
        assert keys(selected, task) == [t.key for t in ts if not t.heldout]


@pytest.mark.parametrize("pin, message", [
    ("[next_item/compat]", "unknown template(s) ['next_item/compat']"),
    ("[next_item/compact, explain/heldout-justify]", "['explain/heldout-justify'] held out"),
])
def test_a_pin_naming_no_trainable_template_is_an_error(pin, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        select_templates(load_config(DEMO, [README_MIX, f"prompts.templates={pin}"]))


def test_a_task_without_templates_is_a_clear_error(tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    shutil.copy(REPO / "prompts" / "next_item.yaml", prompts)
    cfg = load_config(DEMO, [README_MIX, f"prompts.dir={prompts}"])
    with pytest.raises(ConfigError, match=r"no templates for task 'explain': .* has no templates for it"):
        select_templates(cfg)
    (prompts / "explain.yaml").write_text(
        "task: explain\ntemplates:\n  - {name: only, prompt: '{history}', target: '{reason}', heldout: true}\n")
    with pytest.raises(ConfigError, match="has only held-out templates for it"):
        select_templates(cfg)
    with pytest.raises(ConfigError, match=r"unknown task 'explian' in prompts.tasks \(known: .*explain"):
        select_templates(load_config(DEMO, ["prompts.tasks={next_item: 1.0, explian: 0.3}"]))
