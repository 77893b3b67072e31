"""Collaborative knowledge in the item tokens: no leakage, the start, the fuse projector, distillation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import load_tiny

from generative_rec.collaborative import CollaborativeSection, fit_collaborative, projection
from generative_rec.data import RecData
from generative_rec.errors import ConfigError
from generative_rec.indexing import build_index
from generative_rec.modeling import (
    CollaborativeFuser,
    LoraSettings,
    add_item_tokens,
    apply_lora,
    collaborative_start,
    token_vectors,
    untie_output_embeddings,
)
from generative_rec.prompts import IGNORE
from generative_rec.training import TargetOnlyLM, head_rows, load_base


def _with_new_targets(data: RecData, seed: int) -> RecData:
    """The same data with every user's validation and test target replaced by other items."""
    rng = np.random.default_rng(seed)
    other = copy.copy(data)
    other.sequences = [np.concatenate([s[:-2], rng.integers(0, data.num_items, size=2)]) for s in data.sequences]
    assert any(not np.array_equal(a, b) for a, b in zip(data.sequences, other.sequences, strict=True))
    return other


@pytest.mark.parametrize("source", ["sasrec", "bpr", "lightgcn"])
def test_collaborative_embeddings_never_see_validation_or_test_targets(tiny_data, source):
    data = RecData(tiny_data)
    section = CollaborativeSection(source=source, epochs=2, cache=False)
    a = fit_collaborative(data, section).item_embeddings
    b = fit_collaborative(_with_new_targets(data, 1), section).item_embeddings
    assert a.shape == (data.num_items, a.shape[1])
    assert np.array_equal(a, b)  # bit-identical
    # ...while one changed *training* interaction does change them (the test can fail)
    changed = copy.copy(data)
    changed.sequences = [s.copy() for s in data.sequences]
    changed.sequences[0][0] = (changed.sequences[0][0] + 1) % data.num_items
    c = fit_collaborative(changed, section).item_embeddings
    assert not np.array_equal(a, c)


def test_fitted_source_is_cached_and_keyed_on_training_data(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GENREC_HOME", str(tmp_path))
    data = RecData(tiny_data)
    section = CollaborativeSection(source="sasrec", epochs=1)
    first = fit_collaborative(data, section)
    assert "cached" not in first.info and len(list((tmp_path / "collaborative").glob("sasrec-*.pt"))) == 1
    again = fit_collaborative(data, section)
    assert "cached" in again.info
    assert np.array_equal(first.item_embeddings, again.item_embeddings)
    ctx = [data.train_sequence(u) for u in range(3)]
    assert torch.equal(first.next_item_logits(ctx), again.next_item_logits(ctx))
    # other validation/test targets: same key, same cache entry; another source setting: a new entry
    fit_collaborative(_with_new_targets(data, 2), section)
    assert len(list((tmp_path / "collaborative").glob("sasrec-*.pt"))) == 1
    fit_collaborative(data, CollaborativeSection(source="sasrec", epochs=2))
    assert len(list((tmp_path / "collaborative").glob("sasrec-*.pt"))) == 2


def test_teacher_scores_any_context_as_it_scores_a_user(tiny_data):
    """``next_item_logits`` of a prefix equals the source's own score for a user with that history."""
    data = RecData(tiny_data)
    col = fit_collaborative(data, CollaborativeSection(source="sasrec", epochs=1, cache=False,
                                                       params={"max_len": 4}))
    from generative_rec.evaluation.baselines import make

    seq = max(data.train_sequences(), key=len)[:8]  # longer than max_len: only the last 4 are read
    model = make("sasrec", max_len=4)
    model.net = col.net
    contexts = [seq[: j + 1] for j in range(len(seq))]
    ref = model.score(np.zeros(len(contexts), dtype=np.int64), contexts)
    assert np.allclose(col.next_item_logits(contexts, batch_size=3).numpy(), ref, atol=1e-5)


def test_section_rejects_typos_and_impossible_settings():
    with pytest.raises(ConfigError, match="no parameter"):
        CollaborativeSection(source="sasrec", params={"dropuot": 0.1})
    with pytest.raises(ConfigError, match="sequential source"):
        CollaborativeSection(source="bpr", distill=0.5)
    with pytest.raises(ConfigError, match="must be one of"):
        CollaborativeSection(source="itemknn")
    with pytest.raises(ConfigError, match="mode"):
        CollaborativeSection(source="sasrec", mode="blend")


def test_projection_keeps_dot_products():
    p = projection(8, 32, seed=3)
    e = torch.randn(20, 8)
    assert torch.allclose((e @ p.T) @ (e @ p.T).T, e @ e.T, atol=1e-4)


def _tiny_model(tiny_data, tmp_path):
    cfg = load_tiny(tiny_data, tmp_path / "out")
    data = RecData(tiny_data)
    index = build_index(data, cfg.index)
    model, tok = load_base(cfg, data, tmp_path / "work")
    new_ids = add_item_tokens(model, tok, index.new_tokens, index.token_items, data.titles)
    untie_output_embeddings(model)
    return data, index, model, tok, new_ids


def test_collaborative_start_carries_item_similarity_into_the_rows(tiny_data, tmp_path):
    data, index, model, tok, new_ids = _tiny_model(tiny_data, tmp_path)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(data.num_items, 6)).astype(np.float32)
    before_in = model.get_input_embeddings().weight[new_ids].clone()
    old = model.get_input_embeddings().weight[: new_ids[0]].clone()
    collaborative_start(model, tok, index.new_tokens, index.token_items, emb, input_share=1.0, output_share=1.0)
    rows_in = model.get_input_embeddings().weight[new_ids].detach()
    rows_out = model.get_output_embeddings().weight[new_ids].detach()
    assert torch.equal(model.get_input_embeddings().weight[: new_ids[0]], old)  # old vocabulary untouched
    assert not torch.allclose(rows_in, before_in)
    # share 1.0: the rows are the source embeddings up to one scale, so their Gram matrix is E E^T's
    e = torch.from_numpy(emb)[[index.token_items[t][0] for t in index.new_tokens]]
    for rows in (rows_in, rows_out):
        g, ref = rows @ rows.T, e @ e.T
        scale = (g * ref).sum() / (ref * ref).sum()
        assert torch.allclose(g, scale * ref, atol=1e-3 * float(g.abs().max()))


def test_fused_rows_fold_into_the_model_exactly(tiny_data, tmp_path):
    """The fuse projector's contribution, folded into the item rows and merged, gives the same logits."""
    data, index, model, tok, new_ids = _tiny_model(tiny_data, tmp_path)
    emb = np.random.default_rng(1).normal(size=(data.num_items, 5)).astype(np.float32)
    peft_model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), new_ids, untied=True)
    fuser = CollaborativeFuser(new_ids, token_vectors(index.new_tokens, index.token_items, emb), len(tok),
                               model.config.hidden_size)
    fuser.attach(peft_model)
    with torch.no_grad():
        fuser.w_in.normal_(std=0.5)
        fuser.w_out.normal_(std=0.5)
    ids = torch.tensor([[1, 5, new_ids[0], new_ids[3], 7, new_ids[2]]])
    peft_model.eval()
    with torch.no_grad():
        hooked = peft_model(input_ids=ids).logits
        fuser.detach()
        plain = peft_model(input_ids=ids).logits
        assert not torch.allclose(hooked, plain, atol=1e-4)  # the projector mattered
        fuser.fold(peft_model)
        merged = peft_model.merge_and_unload()
        folded = merged(input_ids=ids).logits
    assert torch.allclose(hooked, folded, atol=1e-4)


def _batch(tok, new_ids):
    ids = torch.tensor([[1, 9, new_ids[0], new_ids[4], new_ids[2], new_ids[7]],
                        [1, 9, 11, new_ids[5], new_ids[1], 3]])
    labels = torch.full_like(ids, IGNORE)
    labels[0, 3:] = ids[0, 3:]  # items 2..4 of row 0 are targets
    labels[1, 4] = ids[1, 4]  # one target in row 1 ...
    labels[1, 5] = ids[1, 5]  # ... and a text target (not an item token)
    return ids, torch.ones_like(ids), labels


def test_id_vocab_loss_is_the_softmax_over_id_tokens(tiny_data, tmp_path):
    data, index, model, tok, new_ids = _tiny_model(tiny_data, tmp_path)
    ids, mask, labels = _batch(tok, new_ids)
    vocab = sorted(new_ids)
    loss, n = TargetOnlyLM(model, id_vocab=vocab)(ids, mask, labels)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    tgt = labels[:, 1:]
    total = 0.0
    for r, c in zip(*torch.nonzero(tgt != IGNORE, as_tuple=True), strict=True):
        y = int(tgt[r, c])
        if y in vocab:
            total += -torch.log_softmax(logits[r, c, vocab], -1)[vocab.index(y)]
        else:
            total += -torch.log_softmax(logits[r, c], -1)[y]
    assert int(n) == 5  # three item targets in row 0; an item and a text target in row 1
    assert torch.allclose(loss, total / 5, atol=1e-5)


class _RecordingTeacher:
    """A fake teacher: logits that depend on the whole context, and a record of what it was shown."""

    def __init__(self, num_items: int):
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(num_items, num_items, generator=g)
        self.seen: list[list[int]] = []

    def logits_after(self, context: list[int]) -> torch.Tensor:
        return self.table[context[-1]] + 0.1 * len(context)

    def next_item_logits(self, contexts) -> torch.Tensor:
        self.seen += [[int(x) for x in c] for c in contexts]
        return torch.stack([self.logits_after([int(x) for x in c]) for c in contexts])


def test_distillation_compares_with_the_teacher_on_exactly_the_student_context(tiny_data, tmp_path):
    data, index, model, tok, new_ids = _tiny_model(tiny_data, tmp_path)
    item_tokens = index.token_ids(tok)
    item_tok = [t[0] for t in item_tokens]
    item_of = {t: i for i, t in enumerate(item_tok)}
    ids, mask, labels = _batch(tok, item_tok)
    teacher = _RecordingTeacher(data.num_items)
    lam, temp = 0.7, 2.0
    kd_model = TargetOnlyLM(model, item_tokens=item_tok, teacher=teacher, distill=lam, temperature=temp)
    loss, _ = kd_model(ids, mask, labels)
    ce, _ = TargetOnlyLM(model)(ids, mask, labels)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    tgt = labels[:, 1:]
    kls = []
    for r, c in zip(*torch.nonzero(tgt != IGNORE, as_tuple=True), strict=True):
        y = int(tgt[r, c])
        context = [item_of[int(t)] for t in ids[r, : c + 1] if int(t) in item_of]
        if y not in item_of or not context:
            continue
        s = torch.log_softmax(logits[r, c, item_tok] / temp, -1)
        t = torch.log_softmax(teacher.logits_after(context) / temp, -1)
        kls.append((t.exp() * (t - s)).sum() * temp * temp)
    assert len(kls) == 4  # three item targets in row 0, one in row 1; the text target is not distilled
    expected = (1 - lam) * ce + lam * torch.stack(kls).mean()
    assert torch.allclose(loss, expected, atol=1e-4)
    assert teacher.seen == [[0], [0, 4], [0, 4, 2], [5]]  # exactly each target's context, in order


def test_head_rows_apply_the_trainable_token_rows(tiny_data, tmp_path):
    data, index, model, tok, new_ids = _tiny_model(tiny_data, tmp_path)
    peft_model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), new_ids, untied=True)
    head = peft_model.get_base_model().get_output_embeddings()
    with torch.no_grad():
        head.token_adapter.trainable_tokens_delta["default"].add_(1.0)
    full = head_rows(head, None)
    pick = torch.tensor([0, new_ids[3], 5, new_ids[0]])
    assert torch.equal(head_rows(head, pick), full[pick])
