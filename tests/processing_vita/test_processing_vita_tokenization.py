"""Tokenizer tools: the tiny tokenizer's fixed ids, state tokens, special-token registration, vocabulary extension
that keeps every old id, and mean initialisation of new embedding rows on a real transformers model."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from processing_vita.testing_utils import TINY_TOKEN_IDS, TINY_VOCAB_SIZE, tiny_vita_tokenizer
from processing_vita.tokenization_vita import (
    DEFAULT_STATE_TOKENS,
    VitaState,
    add_vita_special_tokens,
    checked_state_tokens,
    extend_tokenizer_vocabulary,
    parse_state,
    resize_embeddings_with_mean_init,
    train_extension_tokenizer,
)


def plain_tokenizer():
    """A tokenizer without VITA's tokens: the tiny one rebuilt from its BPE without the media/state entries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["hello world, the cat sat on the mat"] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_tiny_tokenizer_has_the_fixed_special_ids_and_fits_the_tiny_vocab():
    tok = tiny_vita_tokenizer()
    names = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>", "image": "<image>", "video": "<video>"}
    for key, token in names.items():
        assert tok.convert_tokens_to_ids(token) == TINY_TOKEN_IDS[key]
    assert tok.convert_tokens_to_ids("<audio>") == TINY_TOKEN_IDS["audio"]
    assert [tok.convert_tokens_to_ids(t) for t in DEFAULT_STATE_TOKENS.values()] == TINY_TOKEN_IDS["state"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 2, 3, 0)
    assert len(tok) <= TINY_VOCAB_SIZE
    ids = tok("<1>你好 world</s>").input_ids
    assert ids[:2] == [1, 7] and ids[-1] == 2 and 0 not in ids


def test_parse_state_reads_the_leading_state_token():
    assert parse_state("<2>") == (VitaState.NOISY_AUDIO, "")
    assert parse_state("  <1> hello") == (VitaState.QUERY_AUDIO, "hello")
    assert parse_state("<3>hi") == (VitaState.QUERY_TEXT, "hi")
    assert parse_state("hello <1>") == (None, "hello <1>")
    tokens = {"query_audio": "☺", "noisy_audio": "☹", "query_text": "✎"}
    assert parse_state("☹", tokens) == (VitaState.NOISY_AUDIO, "")
    assert parse_state("<1> hi", tokens) == (None, "<1> hi")


def test_state_names_are_the_values_and_print_as_themselves():
    assert [state.value for state in VitaState] == ["query_audio", "noisy_audio", "query_text"]
    assert VitaState("noisy_audio") is VitaState.NOISY_AUDIO and VitaState.QUERY_TEXT == "query_text"
    assert f"{VitaState.QUERY_AUDIO}" == str(VitaState.QUERY_AUDIO) == "query_audio"


@pytest.mark.parametrize(
    "bad, match",
    [
        (["<1>", "<2>"], "expected 3"),
        ({"query_audio": "<1>", "noisy_audio": "<2>"}, "expected exactly"),
        ({"query_audio": "<1>", "noisy_audio": "<1>", "query_text": "<3>"}, "its own non-empty string"),
        ({"query_audio": "<1", "noisy_audio": "<1>", "query_text": "<3>"}, "prefix"),
    ],
)
def test_bad_state_tokens_are_refused_with_what_was_found(bad, match):
    with pytest.raises(ValueError, match=match):
        checked_state_tokens(bad)


def test_placeholders_become_special_tokens_and_state_tokens_stay_literal_by_default():
    tok = plain_tokenizer()
    old_vocab = dict(tok.get_vocab())
    added = add_vita_special_tokens(tok)
    assert set(added) == {"<image>", "<video>", "<audio>"}
    assert min(added.values()) >= len(old_vocab)
    assert all(tok.get_vocab()[k] == v for k, v in old_vocab.items())
    assert len(tok("<image>", add_special_tokens=False).input_ids) == 1
    assert len(tok("<1>", add_special_tokens=False).input_ids) > 1
    added = add_vita_special_tokens(tok, state_tokens_as_special=True)
    assert len(tok("<1>", add_special_tokens=False).input_ids) == 1
    assert added["<image>"] == tok.convert_tokens_to_ids("<image>")


def test_vocabulary_extension_keeps_old_ids_and_shortens_chinese_text():
    tok = plain_tokenizer()
    old_vocab = dict(tok.get_vocab())
    text = "今天天气很好，我们去公园散步吧。"
    before = tok(text, add_special_tokens=False).input_ids
    corpus = ["今天天气很好", "我们去公园散步吧", "今天我们去公园", "天气很好我们散步"] * 10
    pieces = train_extension_tokenizer(corpus, vocab_size=200, min_frequency=2)
    assert pieces and all(not p.isascii() for p in pieces)
    new_ids = extend_tokenizer_vocabulary(tok, pieces)
    assert new_ids == list(range(len(old_vocab), len(old_vocab) + len(new_ids)))
    assert all(tok.get_vocab()[k] == v for k, v in old_vocab.items())
    after = tok(text, add_special_tokens=False).input_ids
    assert len(after) < len(before)
    assert tok.decode(after) == text
    assert extend_tokenizer_vocabulary(tok, pieces) == []  # idempotent


@pytest.mark.parametrize("tied", [False, True])
def test_resize_embeddings_mean_initialises_new_rows_of_input_and_output(tied):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(config)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    resize_embeddings_with_mean_init(model, 70)
    new_in = model.get_input_embeddings().weight
    new_out = model.get_output_embeddings().weight
    assert new_in.shape[0] == new_out.shape[0] == 70 == model.config.vocab_size
    torch.testing.assert_close(new_in[:64], old_in)
    torch.testing.assert_close(new_out[:64], old_out)
    torch.testing.assert_close(new_in[64:], old_in.mean(0).expand(6, -1))
    torch.testing.assert_close(new_out[64:], old_out.mean(0).expand(6, -1))
    out = model(torch.tensor([[1, 65, 69]]))
    assert out.logits.shape == (1, 3, 70)
    with pytest.raises(ValueError, match="expected >= 70"):
        resize_embeddings_with_mean_init(model, 10)
