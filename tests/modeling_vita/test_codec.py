"""VitaCodecModel (VITA-1.5's TiCodec): parity with the original through the converter, lengths, speakers, chunked
decoding, configuration and conversion checks, and clear errors on bad input."""

import json

import pytest
import torch

from modeling_vita.codec_vita import VitaCodecModel, VitaCodecOutput
from modeling_vita.configuration_vita_codec import DEFAULT_GLOBAL_TOKENS, VitaCodecConfig
from modeling_vita.convert_vita_codec import (
    codec_config_from_original,
    convert_codec_state_dict,
    convert_original_codec,
    fold_weight_norm,
)
from modeling_vita.testing_utils import TINY_CODEC_CONFIG

from .original_vita_codec import TINY_CODEC_JSON, OriginalVQVAE

# Tiny sizes in the released structure (testing_utils / original_vita_codec): two stages (x4 each, 16 samples a token),
# two residual block kernels, 16-wide codes, a speaker of 4 codes x 2 dims joining after the last stage's 8 channels.
TINY_ORIGINAL_JSON = TINY_CODEC_JSON
TINY_CONFIG = TINY_CODEC_CONFIG
RELEASED_MODEL_JSON = {  # VITA-1.5's codec/model.json (training settings abridged)
    "resblock": "1",
    "num_gpus": 8,
    "batch_size": 160,
    "upsample_rates": [8, 5, 5, 3],
    "upsample_kernel_sizes": [16, 11, 11, 5],
    "upsample_initial_channel": 512,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "segment_size": 24000,
    "hop_size": 240,
    "sampling_rate": 24000,
    "n_code_groups": 1,
    "residul_layer": 1,
    "n_codes": 1024,
    "codebook_loss_lambda": 1.0,
    "commitment_loss_lambda": 0.25,
    "global_code_num": 8,
    "global_feature_conv": [128, 64, 128, 3, 1],
    "global_tokens": [473, 975, 419, 219, 565, 121, 550, 616],
}
PADDING = 10  # codec tokens of context on each side of a streamed chunk, as VITA's streaming decodes


def _randomised_original(resblock: str = "1", seed: int = 0) -> OriginalVQVAE:
    """The original with every weight drawn so that weight norm, codebooks and BatchNorm statistics all matter."""
    model_json = dict(TINY_ORIGINAL_JSON, resblock=resblock)
    if resblock == "2":
        model_json["resblock_dilation_sizes"] = [[1, 3, 5], [2, 1, 7]]  # the original reads the first two only
    torch.manual_seed(seed)
    original = OriginalVQVAE(model_json)
    with torch.no_grad():
        parameters = dict(original.named_parameters())
        for name, tensor in parameters.items():
            if name.endswith("bias"):
                tensor.normal_(0.0, 0.05)
            elif not name.endswith("weight_g"):
                tensor.normal_(0.0, 0.2)
        for name, tensor in parameters.items():
            if name.endswith("weight_g"):  # a magnitude of the order of the direction's norm, but not equal to it
                norm = parameters[name[:-1] + "v"].flatten(1).norm(dim=1).reshape(tensor.shape)
                tensor.copy_(norm * torch.empty_like(tensor).uniform_(0.5, 1.5))
        # BatchNorm statistics of calibration clips, as training leaves them: speaker vectors then spread widely.
        original.eval()
        calibration = _audio(32, 16 * 8, seed=seed + 7).unsqueeze(1)
        norm = original.encoder.GlobalTokenEncoder.fn[2]
        captured = []
        handle = norm.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        original.encoder(calibration)
        handle.remove()
        norm.running_mean.copy_(captured[0].mean(dim=0))
        norm.running_var.copy_(captured[0].var(dim=0))
        # Codes drawn near what the encoder gives, so that encoding picks many different nearest codes.
        features, speakers = original.encoder(calibration)
        rows = features.transpose(1, 2).reshape(-1, features.shape[1])[torch.randperm(32 * 8)[:32]]
        original.quantizer.quantizer_modules[0].embedding.weight.copy_(rows + 0.01 * torch.randn_like(rows))
        for i, module in enumerate(original.quantizer.quantizer_modules_globaltokens):
            part = speakers[:, 2 * i : 2 * i + 2]
            module.embedding.weight.copy_(part + 0.1 * torch.randn_like(part))
    return original


def _native_from(original: OriginalVQVAE, resblock: str = "1") -> VitaCodecModel:
    config = dict(TINY_CONFIG, resblock_type=resblock)
    if resblock == "2":
        config["resblock_dilation_sizes"] = [[1, 3], [2, 1]]
    model = VitaCodecModel(VitaCodecConfig(**config)).eval()
    model.load_state_dict(convert_codec_state_dict(original.release_state_dict()), strict=True)
    return model


@pytest.fixture(scope="module")
def pair():
    original = _randomised_original()
    return original, _native_from(original)


def _tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(
        0, TINY_CONFIG["codebook_size"], (batch, length), generator=torch.Generator().manual_seed(seed)
    )


def _audio(batch: int, samples: int, seed: int = 2) -> torch.Tensor:
    """Noise whose loudness changes every 16 samples (one tiny token), so the codes change along a clip, and whose
    overall level differs from clip to clip, so the speaker vectors differ."""
    generator = torch.Generator().manual_seed(seed)
    envelope = torch.rand(batch, (samples + 15) // 16, generator=generator).repeat_interleave(16, dim=1)
    level = torch.linspace(0.05, 1.0, batch)[:, None]
    return level * envelope[:, :samples] * torch.randn(batch, samples, generator=generator)


@pytest.mark.parametrize("resblock", ["1", "2"])
def test_decode_matches_the_original_codec_with_converted_weights(resblock):
    original = _randomised_original(resblock)
    model = _native_from(original, resblock)
    tokens = _tokens(2, 23)
    speakers = torch.tensor([[3, 1, 4, 1], [5, 9, 2, 6]])
    with torch.no_grad():
        expected = original(tokens[:, :, None], speakers[:, None, :])[:, 0]
        audio = model.decode(tokens, speakers)
    assert audio.std() > 1e-2  # the comparison is not between two near-silent signals
    assert (audio - expected).abs().max() < 1e-4


def test_encode_gives_the_original_codec_and_global_tokens(pair):
    original, model = pair
    audio = _audio(3, 16 * 21 + 5)
    with torch.no_grad():
        expected_codes, expected_global = original.encode(audio)
        codes, global_tokens = model.encode(audio)
    assert codes.shape == (3, 21) and global_tokens.shape == (3, 4)
    assert torch.equal(codes, expected_codes[:, :, 0])
    assert torch.equal(global_tokens, expected_global[:, 0, :])
    # the nearest-code searches are exercised, not one code everywhere
    assert len(codes.unique()) > 3 and len(global_tokens.unique(dim=0)) > 1


def test_output_length_is_tokens_times_hop_length(pair):
    _, model = pair
    assert model.config.hop_length == 16
    for length in (1, 2, 17):
        with torch.no_grad():
            assert model.decode(_tokens(2, length)).shape == (2, length * 16)


def test_forward_returns_the_decoded_audio_in_a_model_output(pair):
    _, model = pair
    tokens = _tokens(1, 9)
    with torch.no_grad():
        output = model(tokens)
        as_tuple = model(tokens, return_dict=False)
        decoded = model.decode(tokens)
    assert isinstance(output, VitaCodecOutput)
    assert torch.equal(output.audio, decoded) and torch.equal(as_tuple[0], decoded)


def test_default_speaker_is_the_config_global_tokens_and_one_row_serves_a_batch(pair):
    _, model = pair
    tokens = _tokens(2, 8)
    with torch.no_grad():
        default = model.decode(tokens)
        explicit = model.decode(tokens, torch.tensor([TINY_CONFIG["global_tokens"]] * 2))
        broadcast = model.decode(tokens, torch.tensor([TINY_CONFIG["global_tokens"]]))
    assert torch.equal(default, explicit) and torch.equal(default, broadcast)


def test_global_tokens_change_the_audio(pair):
    _, model = pair
    tokens = _tokens(1, 12)
    with torch.no_grad():
        first = model.decode(tokens, torch.tensor([[3, 1, 4, 1]]))
        other = model.decode(tokens, torch.tensor([[3, 1, 4, 2]]))  # only the last speaker code differs
    assert (first - other).abs().max() > 1e-3


def test_the_tiny_receptive_field_is_shorter_than_the_streaming_padding(pair):
    # The analytic reach is an upper bound of what a token changes; checked against a measurement in float64 (no
    # underflow), and shorter than the 10 tokens of padding, so chunked decoding can equal one-shot decoding.
    _, model = pair
    config = model.config
    assert config.receptive_field_tokens == 9 < PADDING
    model64 = VitaCodecModel(config).eval().double()
    model64.load_state_dict(model.state_dict())
    tokens, position, hop = _tokens(1, 40), 20, config.hop_length
    changed = tokens.clone()
    changed[0, position] = (changed[0, position] + 1) % config.codebook_size
    with torch.no_grad():
        difference = (model64.decode(tokens) - model64.decode(changed)).abs()[0]
    reached = difference.nonzero()[:, 0]
    left, right = position * hop - int(reached.min()), int(reached.max()) + 1 - (position + 1) * hop
    assert 0 < max(left, right) <= config.receptive_field_samples


def test_released_codec_needs_13_tokens_of_context():
    # Stated for the record: VITA's streaming pads chunks by 10 tokens, below the released generator's reach.
    assert VitaCodecConfig().receptive_field_tokens == 13


def _decode_in_chunks(model, tokens, first_chunk, chunk, padding=PADDING):
    """VITA's streaming: windows of left context + chunk + look-ahead, keeping [left*hop : -look_ahead*hop]."""
    hop, pieces, left, start = model.config.hop_length, [], 0, 0
    size = first_chunk
    while start + size + padding <= tokens.shape[1]:
        window = tokens[:, start - left : start + size + padding]
        pieces.append(model.decode(window)[:, left * hop : -padding * hop])
        start, left, size = start + size, padding, chunk
    pieces.append(model.decode(tokens[:, start - left :])[:, left * hop :])
    return torch.cat(pieces, dim=1)


def test_chunked_decoding_with_ten_tokens_of_context_equals_one_shot(pair):
    _, model = pair
    tokens = _tokens(1, 97)
    with torch.no_grad():
        one_shot = model.decode(tokens)
        chunked = _decode_in_chunks(model, tokens, first_chunk=20, chunk=15)
    assert chunked.shape == one_shot.shape
    assert (chunked - one_shot).abs().max() < 1e-5


def test_converted_config_of_the_release_is_the_default_config():
    config = codec_config_from_original(RELEASED_MODEL_JSON)
    assert config.to_dict() == VitaCodecConfig().to_dict()
    assert config.hop_length == 600 and config.global_tokens == list(DEFAULT_GLOBAL_TOKENS)


def test_released_sizes_build_the_released_key_shapes():
    # The meta device builds the 63M-parameter codec without allocating it.
    with torch.device("meta"):
        shapes = {key: tuple(value.shape) for key, value in VitaCodecModel(VitaCodecConfig()).state_dict().items()}
    assert shapes["quantizer.codebook.weight"] == (1024, 512)
    assert shapes["quantizer.global_codebooks.7.weight"] == (1024, 16)
    assert shapes["generator.upsampler.0.weight"] == (512, 256, 16)
    assert shapes["generator.upsampler.3.weight"] == (64, 32, 5)
    assert shapes["generator.conv_post.weight"] == (1, 32, 7)
    assert shapes["encoder.conv_post.weight"] == (512, 512, 3)
    assert shapes["encoder.speaker_encoder.convs.0.weight"] == (64, 128, 3)


def test_weight_norm_folds_to_the_layers_effective_weight():
    layer = torch.nn.utils.parametrizations.weight_norm(torch.nn.ConvTranspose1d(4, 3, 5))
    with torch.no_grad():
        layer.parametrizations.weight.original0.mul_(2.5)
        folded = fold_weight_norm(layer.parametrizations.weight.original0, layer.parametrizations.weight.original1)
        assert torch.allclose(folded, layer.weight, atol=1e-6)


def test_original_folder_converts_to_the_same_codec(tmp_path, pair):
    original, model = pair
    (tmp_path / "model.json").write_text(json.dumps(TINY_ORIGINAL_JSON))
    torch.save(original.release_state_dict(), tmp_path / "final.pt")
    converted = convert_original_codec(tmp_path)
    assert converted.config.to_dict() == model.config.to_dict()
    tokens = _tokens(1, 11)
    with torch.no_grad():
        assert torch.equal(converted.decode(tokens), model.decode(tokens))


def test_a_checkpoint_that_needs_code_to_unpickle_is_refused(tmp_path, pair):
    original, _ = pair
    (tmp_path / "model.json").write_text(json.dumps(TINY_ORIGINAL_JSON))
    torch.save({"generator": original.generator, "quantizer": {}, "encoder": {}}, tmp_path / "final.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        convert_original_codec(tmp_path)


def test_unknown_and_unsupported_checkpoint_keys_are_reported(pair):
    original, _ = pair
    checkpoint = original.release_state_dict()
    checkpoint["generator"]["extra_layer.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"generator\.extra_layer\.weight"):
        convert_codec_state_dict(checkpoint)
    checkpoint = original.release_state_dict()
    checkpoint["quantizer"]["quantizer_modules2.0.embedding.weight"] = torch.zeros(32, 16)
    with pytest.raises(ValueError, match="residual quantisation"):
        convert_codec_state_dict(checkpoint)
    checkpoint = original.release_state_dict()
    del checkpoint["encoder"]
    with pytest.raises(ValueError, match=r"lacks the state dicts \['encoder'\]"):
        convert_codec_state_dict(checkpoint)
    checkpoint = original.release_state_dict()
    del checkpoint["generator"]["conv_pre.weight_v"]
    with pytest.raises(ValueError, match="conv_pre.weight_g"):
        convert_codec_state_dict(checkpoint)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_code_groups": 2}, "n_code_groups=2"),
        ({"global_code_num": 3}, "must divide it"),
        ({"upsample_rates": [8, 5, 5]}, "must hold 3 integers"),
    ],
)
def test_unsupported_original_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        codec_config_from_original({**RELEASED_MODEL_JSON, **changes})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"speaker_channels": 16}, r"must equal the speaker embedding's width.*= 8"),
        ({"speaker_channels": 6, "global_code_num": 3, "global_tokens": [0, 0, 0]}, "not the output channel count"),
        ({"upsample_kernel_sizes": [7, 8]}, "differ from it by an even number"),
        ({"upsample_rates": [4], "upsample_kernel_sizes": [8]}, "at least 2 stages"),
        ({"resblock_dilation_sizes": [[1, 3], [1, 2, 1]]}, r"takes 3 dilations per block, got \[1, 3\]"),
        ({"resblock_type": "3"}, "'1' or '2'"),
        ({"global_tokens": [3, 1, 4, 99]}, r"holds 99, outside \[0, 32\)"),
        ({"global_tokens": [3, 1]}, "must hold 4 integers"),
        ({"global_feature_conv": [8, 8, 8, 3, 1]}, r"expected \[16, hidden, 8, kernel, stride\]"),
        ({"encoder_initial_channel": 4}, "GroupNorm"),
    ],
)
def test_inconsistent_configs_are_refused_with_the_fix(changes, message):
    with pytest.raises(ValueError, match=message):
        VitaCodecConfig(**{**TINY_CONFIG, **changes})


def test_config_round_trips_through_json(tmp_path):
    config = VitaCodecConfig(**TINY_CONFIG)
    config.save_pretrained(tmp_path)
    assert VitaCodecConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "tokens, speakers, message",
    [
        (torch.tensor([[0, 32]]), None, r"ids in \[0, 32\], outside \[0, 32\).*end-of-speech"),
        (torch.tensor([[-1, 3]]), None, r"outside \[0, 32\)"),
        (torch.tensor([1, 2, 3]), None, r"shape \(batch_size, num_tokens\).*got \(3,\)"),
        (torch.zeros(1, 0, dtype=torch.long), None, r"num_tokens > 0.*got \(1, 0\)"),
        (torch.tensor([[0.5, 1.0]]), None, "integer tensor, got torch.float32"),
        ([[1, 2]], None, "integer tensor, got list"),
        (torch.tensor([[1, 2]]), torch.tensor([[1, 2, 3]]), r"shape \(batch_size, 4\), got \(1, 3\)"),
        (torch.tensor([[1, 2]]), torch.tensor([[1, 2, 3, 32]]), r"global_tokens.*outside \[0, 32\)"),
        (torch.tensor([[1, 2]] * 3), torch.tensor([[1, 2, 3, 4]] * 2), "2 rows for 3 sequences"),
    ],
)
def test_bad_decode_inputs_raise_clear_errors(pair, tokens, speakers, message):
    _, model = pair
    with pytest.raises(ValueError, match=message):
        model.decode(tokens, speakers)


@pytest.mark.parametrize(
    "audio, message",
    [
        (torch.tensor([[0.0, float("nan")] * 16]), "NaN or infinite"),
        (torch.zeros(40), r"shape \(batch_size, num_samples\).*got \(40,\).*audio\[None\]"),
        (torch.zeros(1, 15), r"num_samples >= hop_length \(16\).*got \(1, 15\)"),
        (torch.zeros(1, 32, dtype=torch.int16), "float tensor of samples"),
    ],
)
def test_bad_encode_inputs_raise_clear_errors(pair, audio, message):
    _, model = pair
    with pytest.raises(ValueError, match=message):
        model.encode(audio)


def test_save_and_auto_load_give_the_same_codec(tmp_path, pair):
    from transformers import AutoModel

    _, model = pair
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, VitaCodecModel) and not loaded.training
    tokens, audio = _tokens(1, 10), _audio(1, 16 * 6)
    with torch.no_grad():
        assert torch.equal(loaded.decode(tokens), model.decode(tokens))
        assert all(torch.equal(a, b) for a, b in zip(loaded.encode(audio), model.encode(audio)))
