"""VitaAudioEncoder: length formula, padding invariance, attention backends and input checks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_vita import VitaAudioEncoderConfig
from modeling_vita.audio_encoder import VitaAudioEncoder, get_audio_token_count, get_audio_token_counts
from modeling_vita.testing_utils import TINY_AUDIO_CONFIG


def tiny_encoder(**overrides) -> VitaAudioEncoder:
    return VitaAudioEncoder(VitaAudioEncoderConfig(**{**TINY_AUDIO_CONFIG, "output_size": 48, **overrides})).eval()


@pytest.mark.parametrize("seconds, tokens", [(1.0, 12), (1.5, 18), (2.0, 24), (10.0, 124)])
def test_token_count_matches_the_released_model_examples(seconds, tokens):
    samples = int(seconds * 16000)
    frames = 1 + (samples - 400) // 160
    assert get_audio_token_count(frames) == tokens


def test_token_count_of_a_3_54_second_clip_is_44():
    assert get_audio_token_count(1 + (int(3.54 * 16000) - 400) // 160) == 44


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=7, max_value=700))
def test_encoder_output_length_equals_the_token_formula(num_frames):
    encoder = tiny_encoder()
    with torch.no_grad():
        out = encoder(torch.randn(1, num_frames, 80))
    assert out.pooler_output.shape == (1, get_audio_token_count(num_frames), 48)
    assert int(out.attention_mask.sum()) == get_audio_token_count(num_frames)


def test_tensor_and_integer_token_formulas_agree():
    lengths = torch.arange(7, 2000)
    assert get_audio_token_counts(lengths).tolist() == [get_audio_token_count(n) for n in range(7, 2000)]


def test_padded_clip_gives_the_same_vectors_as_the_clip_alone():
    encoder = tiny_encoder()
    short, long = torch.randn(150, 80), torch.randn(260, 80)
    batch = torch.zeros(2, 260, 80)
    batch[0, :150], batch[1] = short, long
    mask = torch.zeros(2, 260, dtype=torch.long)
    mask[0, :150], mask[1] = 1, 1
    with torch.no_grad():
        padded = encoder(batch, mask)
        alone = encoder(short[None])
    count = get_audio_token_count(150)
    assert padded.attention_mask[0].sum() == count
    torch.testing.assert_close(padded.pooler_output[0, :count], alone.pooler_output[0], atol=1e-5, rtol=1e-5)


def test_padding_content_never_changes_real_outputs():
    encoder = tiny_encoder()
    batch = torch.randn(1, 300, 80)
    mask = torch.ones(1, 300, dtype=torch.long)
    mask[0, 200:] = 0
    noisy = batch.clone()
    noisy[0, 200:] = torch.randn(100, 80) * 100
    with torch.no_grad():
        clean_out = encoder(batch, mask)
        noisy_out = encoder(noisy, mask)
    valid = clean_out.attention_mask[0].bool()
    torch.testing.assert_close(clean_out.pooler_output[0, valid], noisy_out.pooler_output[0, valid])


def test_sdpa_and_eager_attention_agree():
    encoder = tiny_encoder()
    features = torch.randn(2, 180, 80)
    mask = torch.ones(2, 180, dtype=torch.long)
    mask[1, 120:] = 0
    with torch.no_grad():
        sdpa = encoder(features, mask).pooler_output
        eager = encoder(features, mask, output_attentions=True)
    valid = eager.attention_mask.bool()
    torch.testing.assert_close(sdpa[valid], eager.pooler_output[valid], atol=1e-5, rtol=1e-5)
    # Attention rows sum to one and give no weight to padded keys.
    weights = eager.attentions[0]
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))
    assert weights[1, :, :, 30:].abs().max() < 1e-6  # 120 frames -> 29 encoder frames


def test_relative_position_bias_changes_the_output():
    encoder = tiny_encoder()
    features = torch.randn(1, 120, 80)
    with torch.no_grad():
        before = encoder(features).pooler_output
        for layer in encoder.layers:
            layer.self_attn.linear_pos.weight.zero_()
        after = encoder(features).pooler_output
    assert not torch.allclose(before, after)


def test_wrong_feature_shape_is_rejected_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(batch, frames, 80\)"):
        tiny_encoder()(torch.randn(1, 100, 40))


def test_too_short_audio_is_rejected():
    with pytest.raises(ValueError, match="at least 7 fbank frames"):
        tiny_encoder()(torch.randn(1, 6, 80))


def test_audio_longer_than_the_position_table_is_rejected():
    encoder = tiny_encoder(max_source_positions=50)
    with pytest.raises(ValueError, match="exceeds the positional table of 50"):
        encoder(torch.randn(1, 4 * 52 + 3, 80))


def test_encoder_is_a_pretrained_model_that_round_trips(tmp_path):
    encoder = tiny_encoder()
    encoder.save_pretrained(tmp_path)
    reloaded = VitaAudioEncoder.from_pretrained(tmp_path).eval()
    features = torch.randn(1, 90, 80)
    with torch.no_grad():
        torch.testing.assert_close(encoder(features).pooler_output, reloaded(features).pooler_output)


def test_output_is_the_tower_width_transformer_state_and_the_llm_width_adapter_output():
    encoder = tiny_encoder()
    with torch.no_grad():
        out = encoder(torch.randn(2, 120, 80), output_hidden_states=True)
        as_tuple = encoder(torch.randn(2, 120, 80), return_dict=False)
    assert out.last_hidden_state.shape == (2, 29, 32)  # 120 frames -> 29 encoder frames, the tower width
    assert out.pooler_output.shape == (2, get_audio_token_count(120), 48)  # the adapter's output width
    assert len(out.hidden_states) == encoder.config.num_hidden_layers + 1
    torch.testing.assert_close(encoder.layer_norm(out.hidden_states[-1]), out.last_hidden_state)
    assert isinstance(as_tuple, tuple) and as_tuple[1].shape == (2, get_audio_token_count(120), 48)
