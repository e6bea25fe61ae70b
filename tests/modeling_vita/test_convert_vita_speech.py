"""Converting VITA-1.5's `vita_tts_ckpt/` (the speech decoder here, the codec through `convert_vita_codec`): the
released `model.json` gives the released decoder, a converted folder speaks the original's tokens and audio, and bad
decoder folders are refused naming the file and what was found and expected."""

import json
import logging

import pytest
import torch

from modeling_vita.configuration_vita_speech import VitaSpeechDecoderConfig
from modeling_vita.convert_vita_speech import (
    convert_original_speech,
    decoder_config_from_original,
    load_original_decoder,
)
from modeling_vita.speech_decoder_vita import VitaSpeechDecoder

from .original_vita_tts import (
    TINY_CODEC_JSON,
    TINY_TTS_ARGS,
    original_decoder_state_dict,
    original_infer,
    write_original_decoder_folder,
    write_original_tts_folder,
)

# Freeze-Omni's decoder/model.json args, which VITA-1.5's decoder shapes agree with (training settings abridged).
RELEASED_ARGS = {
    "idim": 896,
    "odim": 1024,
    "encoder_pre_norm_type": "ln",
    "encoder_drop_rate": 0.1,
    "encoder_criterion": "ce",
    "encoder_upsample_rate": 9,
    "encoder_output_dim": 896,
    "kv_cache_prefix_finetune": 1,
    "transformer_attention_dim": 896,
    "transformer_attention_heads": 14,
    "transformer_linear_units": 4864,
    "transformer_num_blocks": 4,
    "transformer_dropout_rate": 0.1,
}


def test_the_released_model_json_gives_the_released_decoder():
    config = decoder_config_from_original([896, 1024, RELEASED_ARGS])
    defaults = VitaSpeechDecoderConfig(attention_dropout=0.1).to_dict()
    assert config.to_dict() == defaults
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in VitaSpeechDecoder(config).state_dict().items()}
    assert shapes["embed_tokens.weight"] == (1028, 896) and shapes["out_proj.weight"] == (1028, 896)
    assert (
        shapes["pre_layers.1.mlp.down_proj.weight"] == (896, 4864) and "pre_layers.2.mlp.up_proj.weight" not in shapes
    )
    assert shapes["layers.3.self_attn.q_proj.weight"] == (896, 896) and shapes["out_proj.bias"] == (1028,)
    parameters = sum(torch.Size(s).numel() for s in shapes.values())
    print(f"released decoder: {parameters / 1e6:.1f}M parameters")


@pytest.mark.parametrize("wrapped", [True, False])
def test_a_decoder_folder_converts_wrapped_or_plain_and_drops_the_unused_prefix_layers(tmp_path, caplog, wrapped):
    sd = original_decoder_state_dict(seed=4)
    folder = write_original_decoder_folder(tmp_path / "decoder", sd, wrap=wrapped)
    with caplog.at_level(logging.INFO, logger="modeling_vita.convert_vita_speech"):
        config, state = load_original_decoder(folder)
    assert "dropped 18 weights the original never runs (layers_prefix" in caplog.text
    assert not any("prefix" in key for key in state) and len(state) == len(sd) - 18
    assert (config.num_hidden_layers, config.num_pre_layers, config.attention_dropout) == (2, 1, 0.1)
    assert torch.equal(state["embed_tokens.weight"], sd["embedding.weight"])
    assert torch.equal(state["pre_layers.0.self_attn.q_proj.weight"], sd["layers_pre_nn.0.self_attn.q_proj.weight"])
    assert torch.equal(state["out_proj.bias"], sd["out_fnn.bias"])


def test_a_converted_vita_tts_folder_speaks_the_originals_tokens_and_audio(tmp_path):
    written = write_original_tts_folder(tmp_path, seed=2)
    model = convert_original_speech(written["folder"])
    frames = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(0))
    ours = model.generate_speech(frames, do_sample=False, max_speech_tokens=30)
    tokens = list(original_infer(written["decoder_sd"], frames, top_k=1, max_tokens=30))
    assert ours.codec_tokens[0].tolist() == tokens and len(tokens) >= 5
    speaker = torch.tensor(TINY_CODEC_JSON["global_tokens"])[None, None]
    with torch.no_grad():
        audio = written["codec"](torch.tensor(tokens)[None, :, None], speaker)[:, 0]
    worst = float((ours.audio - audio).abs().max())
    print(f"{len(tokens)} codec tokens; worst audio difference to the original codec {worst:.1e}")
    assert ours.audio.shape == audio.shape and worst < 1e-5


def _decoder_folder(tmp_path, sd=None, args=None, content=None):
    folder = write_original_decoder_folder(tmp_path / "decoder", sd or original_decoder_state_dict(), args)
    if content is not None:
        (folder / "model.json").write_text(json.dumps(content))
    return folder


def test_bad_decoder_folders_are_refused_naming_the_file_and_the_values(tmp_path):
    sd = original_decoder_state_dict()
    with pytest.raises(ValueError, match=r"decoder/model.json holds a dict; expected \[idim, odim, \{args\}\]"):
        load_original_decoder(_decoder_folder(tmp_path, content={"idim": 32}))
    args = {k: v for k, v in TINY_TTS_ARGS.items() if k != "transformer_num_blocks"}
    with pytest.raises(ValueError, match=r"lacks \['transformer_num_blocks'\] in its args"):
        load_original_decoder(_decoder_folder(tmp_path, content=[32, 32, args]))
    with pytest.raises(ValueError, match=r"encoder_output_dim is 48 but transformer_attention_dim is 32"):
        load_original_decoder(_decoder_folder(tmp_path, args={"encoder_output_dim": 48}))
    with pytest.raises(ValueError, match=r"final.pt does not fit its model.json .*found \(64, 32\), expected \(128, "
                       r"32\)"):  # fmt: skip
        load_original_decoder(_decoder_folder(tmp_path, args={"transformer_linear_units": 128}))
    with pytest.raises(ValueError, match=r"holds 1 key\(s\) the speech decoder does not have: \['extra.weight'\]"):
        load_original_decoder(_decoder_folder(tmp_path, sd={**sd, "extra.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match=r"layers.1.mlp.up_proj.weight: missing"):
        load_original_decoder(
            _decoder_folder(tmp_path, sd={k: v for k, v in sd.items() if "layers.1.mlp.up" not in k})
        )
    folder = _decoder_folder(tmp_path)
    torch.save({"model": torch.nn.Linear(2, 2)}, folder / "final.pt")  # a pickle that needs torch.nn code
    with pytest.raises(ValueError, match=r"cannot be read as weights only .*refused, never run"):
        load_original_decoder(folder)
    (folder / "final.pt").unlink()
    with pytest.raises(ValueError, match=r"decoder/final.pt not found"):
        load_original_decoder(folder)
