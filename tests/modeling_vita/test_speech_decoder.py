"""VitaSpeechDecoder (VITA-1.5's `LLM2TTSCodecAR`): parity with an independent re-implementation of the original
(`original_vita_tts.py`) through the converter, the bidirectional prefix, the repetition-penalty quirk, stopping,
the training forward, and clear refusals of bad configs and inputs."""

import math

import pytest
import torch

from modeling_vita.configuration_vita_speech import VitaSpeechConfig, VitaSpeechDecoderConfig
from modeling_vita.convert_vita_speech import convert_decoder_state_dict, decoder_config_from_original
from modeling_vita.speech_decoder_vita import VitaSpeechDecoder, apply_repetition_penalty
from modeling_vita.testing_utils import TINY_CODEC_CONFIG, tiny_vita_config

from .original_vita_tts import TINY_TTS_ARGS, original_decoder_state_dict, original_infer, original_training_loss

ODIM = TINY_TTS_ARGS["odim"]
BOS, SOS, EOS, PAD = ODIM, ODIM + 1, ODIM + 2, ODIM + 3


@pytest.fixture(scope="module")
def original_sd():
    return original_decoder_state_dict(seed=0)


def _decoder(original_sd, attn_implementation="eager") -> VitaSpeechDecoder:
    config = decoder_config_from_original([TINY_TTS_ARGS["idim"], ODIM, TINY_TTS_ARGS])
    decoder = VitaSpeechDecoder._from_config(config, attn_implementation=attn_implementation)
    decoder.load_state_dict(convert_decoder_state_dict(original_sd))  # strict: every weight, nothing more
    return decoder.eval()


def _frames(length=9, seed=1) -> torch.Tensor:
    return torch.randn(1, length, TINY_TTS_ARGS["idim"], generator=torch.Generator().manual_seed(seed))


class _Script:
    """Forward hook on `out_proj` replacing each step's logits by the next row of a script."""

    def __init__(self, rows: list[torch.Tensor]):
        self.rows, self.step = rows, 0

    def __call__(self, module, inputs, output):
        row = self.rows[min(self.step, len(self.rows) - 1)]
        self.step += 1
        return row.to(output.dtype).expand_as(output).clone()


def _favour(*tokens: int, vocab: int = ODIM + 4) -> torch.Tensor:
    """Logits with `tokens` first, second, ... (10, 9, ...), everything else 0."""
    row = torch.zeros(vocab)
    for rank, token in enumerate(tokens):
        row[token] = 10.0 - rank
    return row


# ----------------------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("penalty_window_size", [-1, 6])
def test_greedy_tokens_and_step_logits_equal_the_original(original_sd, attn_implementation, penalty_window_size):
    decoder = _decoder(original_sd, attn_implementation)
    frames = _frames()
    ours_logits, original_logits = [], []
    # Our raw logits per step; the penalty is applied to them below as the original's loop does.
    handle = decoder.out_proj.register_forward_hook(lambda m, i, o: ours_logits.append(o[0, -1].detach().clone()))
    ours = list(decoder.generate_codec_tokens(frames, do_sample=False, penalty_window_size=penalty_window_size,
                                              penalty=1.3, max_speech_tokens=24))  # fmt: skip
    handle.remove()
    original = list(original_infer(original_sd, frames, top_k=1, penalty_window_size=penalty_window_size,
                                   penalty=1.3, max_tokens=24, step_logits=original_logits))  # fmt: skip
    assert ours == original and len(ours) >= 8, (ours, original)
    history = [SOS, *ours]
    worst = 0.0
    for step, (raw, reference) in enumerate(zip(ours_logits, original_logits)):
        window = history[: step + 1][-penalty_window_size:] if penalty_window_size > 0 else []
        worst = max(worst, float((apply_repetition_penalty(raw, window, 1.3) - reference).abs().max()))
    print(f"{attn_implementation}, penalty window {penalty_window_size}: {len(ours)} tokens, worst logit {worst:.1e}")
    assert worst < 1e-4


def test_top_k_sampling_with_the_same_seed_draws_the_original_tokens(original_sd):
    decoder, frames = _decoder(original_sd, "sdpa"), _frames(seed=2)
    ours = list(decoder.generate_codec_tokens(frames, top_k=2, max_speech_tokens=30,
                                              generator=torch.Generator().manual_seed(7)))  # fmt: skip
    original = list(original_infer(original_sd, frames, top_k=2, max_tokens=30,
                                   generator=torch.Generator().manual_seed(7)))  # fmt: skip
    assert ours == original
    other = list(decoder.generate_codec_tokens(frames, top_k=2, max_speech_tokens=30,
                                               generator=torch.Generator().manual_seed(8)))  # fmt: skip
    assert other != ours  # the draw matters: top-2 really samples


def test_the_prefix_is_bidirectional_under_sdpa_and_eager(original_sd):
    frames = _frames(length=6)
    changed = frames.clone()
    changed[:, -1] += 1.0
    for attn_implementation in ("eager", "sdpa"):
        decoder = _decoder(original_sd, attn_implementation)
        seen: list[torch.Tensor] = []
        handle = decoder.layers[-1].register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.detach().clone()))
        for inputs in (frames, changed):
            next(decoder.generate_codec_tokens(inputs, do_sample=False, max_speech_tokens=1), None)
        handle.remove()
        prefix_before, prefix_after = seen[0], seen[2]  # the prefix pass of each run (then one decoding step)
        # BOS (row 0) and the first frame's row see the last frame: a causal prefix would leave them unchanged.
        assert not torch.allclose(prefix_before[0, :2], prefix_after[0, :2], atol=1e-6), attn_implementation
        assert not torch.allclose(seen[1], seen[3], atol=1e-6)  # and the first step's output follows


# ------------------------------------------------------------------------------------------------ decoding rules
def test_penalty_divides_a_token_once_per_occurrence_sos_included():
    logits = torch.tensor([2.0, -1.0, 3.0, 0.5, 1.0, 1.0])
    window = [5, 0, 0, 2, 0]  # 5 plays SOS here
    penalised = apply_repetition_penalty(logits.clone(), window, 1.5)
    expected = logits.clone()
    for token in window:  # the original's loop over distinct 0-d tensors: one division per occurrence, in turn
        expected[token] /= 1.5
    assert torch.equal(penalised, expected)
    assert penalised[0] == ((2.0 / 1.5) / 1.5) / 1.5 and penalised[5] == 1.0 / 1.5 and penalised[1] == -1.0
    assert torch.equal(apply_repetition_penalty(logits, [], 1.5), logits)


def test_a_token_penalised_twice_loses_to_one_penalised_never(original_sd):
    decoder = _decoder(original_sd)
    a, b = 3, 7
    row = torch.zeros(ODIM + 4)
    row[a], row[b] = 10.0, 8.5  # 10 / 1.1 = 9.09 beats 8.5; 10 / 1.1 / 1.1 = 8.26 does not
    decoder.out_proj.register_forward_hook(_Script([row]))
    tokens = list(decoder.generate_codec_tokens(_frames(), do_sample=False, penalty_window_size=10, penalty=1.1,
                                                max_speech_tokens=3))  # fmt: skip
    assert tokens == [a, a, b]


def test_eos_stops_decoding_and_is_not_emitted(original_sd):
    decoder = _decoder(original_sd)
    decoder.out_proj.register_forward_hook(_Script([_favour(3), _favour(5), _favour(EOS), _favour(7)]))
    assert list(decoder.generate_codec_tokens(_frames(), do_sample=False)) == [3, 5]


def test_max_speech_tokens_bounds_a_decoder_that_never_ends(original_sd):
    decoder = _decoder(original_sd)
    decoder.out_proj.register_forward_hook(_Script([_favour(4, EOS)]))
    for bound in (1, 5):
        assert list(decoder.generate_codec_tokens(_frames(), do_sample=False, max_speech_tokens=bound)) == [4] * bound
    # sampling among the top 2 here draws 4 or EOS
    sampled = list(decoder.generate_codec_tokens(_frames(), top_k=2, max_speech_tokens=50,
                                                 generator=torch.Generator().manual_seed(0)))  # fmt: skip
    assert set(sampled) <= {4} and len(sampled) < 50


def test_bos_sos_and_pad_are_never_sampled(original_sd):
    decoder = _decoder(original_sd)
    decoder.out_proj.register_forward_hook(_Script([_favour(PAD, BOS, SOS, 9, EOS)]))
    assert list(decoder.generate_codec_tokens(_frames(), do_sample=False, max_speech_tokens=3)) == [9, 9, 9]


# ----------------------------------------------------------------------------------------------------- training
@torch.no_grad()
def test_training_loss_equals_the_original_and_padded_samples_equal_them_alone(original_sd):
    decoder = _decoder(original_sd)
    generator = torch.Generator().manual_seed(3)
    frames = torch.randn(2, 5, TINY_TTS_ARGS["idim"], generator=generator)
    labels = torch.randint(0, ODIM, (2, 6), generator=generator)
    labels_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    out = decoder(frames, labels=labels, labels_mask=labels_mask)
    loss_sum, original_logits = original_training_loss(original_sd, frames, [5, 5], labels, [6, 4])
    assert math.isfinite(out.loss.item())
    assert abs(out.loss.item() * (7 + 5) - loss_sum.item()) < 1e-3  # mean over 6 + EOS and 4 + EOS targets
    assert float((out.logits[0] - original_logits[0]).abs().max()) < 1e-4
    assert float((out.logits[1, :5] - original_logits[1, :5]).abs().max()) < 1e-4
    # Frames of different lengths: each sample scores as it does alone (positions as decoding gives them).
    frames_mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    batch = decoder(frames, frames_mask=frames_mask, labels=labels, labels_mask=labels_mask).logits
    alone = decoder(frames[1:, :3], labels=labels[1:, :4]).logits
    assert float((batch[1, :5] - alone[0]).abs().max()) < 1e-5
    # The first row without labels is the first decoding step's logits.
    first = decoder(frames[:1]).logits[0, 0]
    step = []
    decoder.out_proj.register_forward_hook(lambda m, i, o: step.append(o[0, -1].detach()))
    next(decoder.generate_codec_tokens(frames[:1], do_sample=False, max_speech_tokens=1), None)
    assert float((first - step[0]).abs().max()) < 1e-5


# ------------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "arguments, match",
    [
        ({"input_dim": 16}, r"`input_dim` \(16\) must equal `hidden_size` \(32\)"),
        ({"num_attention_heads": 5}, r"`hidden_size` \(32\) must be divisible by `num_attention_heads` \(5\)"),
        ({"num_pre_layers": -1}, r"`num_pre_layers` must be 0 or more, got -1"),
        ({"codec_vocab_size": 0}, r"`codec_vocab_size` must be at least 1, got 0"),
    ],
)
def test_bad_decoder_configs_are_refused_naming_the_values(arguments, match):
    base = {"input_dim": 32, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}
    with pytest.raises(ValueError, match=match):
        VitaSpeechDecoderConfig(**{**base, **arguments})


@pytest.mark.parametrize(
    "arguments, match",
    [
        ({"top_k": 0}, r"`top_k` \(VitaSpeechConfig\) must be an integer >= 1, got 0"),
        ({"top_k": 37}, r"`top_k` \(VitaSpeechConfig\) is 37, more than the decoder's 36 outputs; expected 1..36"),
        ({"chunk_size": 0}, r"`chunk_size` .* >= 1, got 0"),
        ({"first_chunk_size": -3}, r"`first_chunk_size` .* >= 1, got -3"),
        ({"chunk_padding": -1}, r"`chunk_padding` .* >= 0 .*got -1"),
        ({"penalty": 0.0}, r"`penalty` .* finite number > 0 .*got 0.0"),
        ({"penalty": float("nan")}, r"`penalty` .*got nan"),
        ({"max_speech_tokens": 0}, r"`max_speech_tokens` .* >= 1, got 0"),
        ({"codec_config": {**TINY_CODEC_CONFIG, "codebook_size": 64, "global_codebook_size": 64}},
         r"emits 32 codec tokens .* codec has 64 codes"),
    ],
)  # fmt: skip
def test_bad_speech_configs_are_refused_naming_found_and_expected(arguments, match):
    decoder = {"input_dim": 32, "hidden_size": 32, "num_attention_heads": 4, "codec_vocab_size": 32}
    base = {"decoder_config": decoder, "codec_config": TINY_CODEC_CONFIG}
    with pytest.raises(ValueError, match=match):
        VitaSpeechConfig(**{**base, **arguments})


def test_a_speech_decoder_whose_rows_do_not_divide_the_llm_width_is_refused():
    speech = {"decoder_config": {"input_dim": 48, "hidden_size": 48, "num_attention_heads": 4,
                                 "codec_vocab_size": 32}, "codec_config": TINY_CODEC_CONFIG}  # fmt: skip
    with pytest.raises(ValueError, match=r"LLM width \(64\) is not a multiple of .*input_dim = 48"):
        tiny_vita_config("qwen2", speech_config=speech)


@pytest.mark.parametrize(
    "frames, match",
    [
        (torch.full((1, 4, 32), float("nan")), r"NaN or inf in 4 of 4 rows; expected finite"),
        (torch.ones(1, 4, 16), r"shape \(1, 4, 16\); expected \(batch, length >= 1, 32\)"),
        (torch.ones(1, 0, 32), r"shape \(1, 0, 32\); expected \(batch, length >= 1, 32\).*at least one text token"),
        (torch.ones(4, 32, dtype=torch.long), r"float tensor of shape \(batch, length, 32\), got torch.int64"),
        (torch.ones(2, 4, 32), r"holds 2 texts; expected 1"),
    ],
)
def test_bad_frames_are_refused_with_the_fix(original_sd, frames, match):
    decoder = _decoder(original_sd)
    with pytest.raises(ValueError, match=match):
        list(decoder.generate_codec_tokens(frames))


def test_bad_generation_settings_are_refused(original_sd):
    decoder = _decoder(original_sd)
    with pytest.raises(ValueError, match=r"`top_k` \(generate_codec_tokens\) is 99, more than the decoder's 36"):
        list(decoder.generate_codec_tokens(_frames(), top_k=99))
    with pytest.raises(ValueError, match=r"`penalty_window_size` .* must be an integer .*got 2.5"):
        list(decoder.generate_codec_tokens(_frames(), penalty_window_size=2.5))
    with pytest.raises(ValueError, match=r"`labels` hold values in \[0, 40\]; expected codec tokens in \[0, 32\)"):
        decoder(_frames(), labels=torch.tensor([[0, 40]]))
