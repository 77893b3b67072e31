"""Item-text embeddings on a tiny random Llama: padding-invariant pooling, order kept, cache reused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generative_rec import embeddings as E

TEXTS = ["Toy Story (1995)", "Heat", "A much longer title that needs several more tokens (2001)", "", "Heat Wave"]


@pytest.fixture(scope="module")
def tiny():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(TEXTS * 5, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval(), tok


def test_shape_and_padding_invariance(tiny):
    model, tok = tiny
    batched = E.item_text_embeddings(model, tok, TEXTS, batch_size=8, progress=False)
    alone = np.stack([E.item_text_embeddings(model, tok, [t], progress=False)[0] for t in TEXTS])
    assert batched.shape == (len(TEXTS), 16) and batched.dtype == np.float32
    assert np.isfinite(batched).all()
    np.testing.assert_allclose(batched, alone, atol=1e-5)  # right padding + mask: no effect
    assert not np.allclose(batched[1], batched[4])  # "Heat" vs "Heat Wave"


def test_pooling_and_layer_options(tiny):
    model, tok = tiny
    ids = tok(["Heat Wave"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hs = model.base_model(input_ids=ids, output_hidden_states=True).hidden_states
    mean0 = E.item_text_embeddings(model, tok, ["Heat Wave"], layer=0, progress=False)[0]
    last = E.item_text_embeddings(model, tok, ["Heat Wave"], pooling="last", progress=False)[0]
    np.testing.assert_allclose(mean0, hs[0][0].mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(last, hs[-1][0, -1].numpy(), atol=1e-5)
    with pytest.raises(ValueError):
        E.item_text_embeddings(model, tok, ["x"], pooling="max", progress=False)
    assert model.training is False


def test_cache_round_trip(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.float64).reshape(3, 2)

    key = E.cache_key("some-encoder", ["a", "b", "c"], layer=-1)
    assert key != E.cache_key("some-encoder", ["a", "b", "c"], layer=0)
    assert key != E.cache_key("some-encoder", ["a", "bc", ""], layer=-1)
    first = E.cached(key, compute, tmp_path)
    again = E.cached(key, compute, tmp_path)
    assert calls == [1] and first.dtype == np.float32 and np.array_equal(first, again)

