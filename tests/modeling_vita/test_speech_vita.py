"""Speech out on VitaForConditionalGeneration (`generate_speech`, `stream_speech`) with a tiny speech model: chunks
join to the one-shot clip, chunk sizes as configured and handed out as soon as their look-ahead exists, the frames
are the LLM's input embeddings cut into rows, training reaches only the decoder, save/reload (also as Hub remote
code in a process without this project) speaks the same, and bad or empty inputs get clear answers."""

import pytest
import torch

from modeling_vita import VitaForConditionalGeneration, VitaSpeechDecoder, VitaSpeechModel, VitaSpeechOutput
from modeling_vita.convert_vita_speech import convert_decoder_state_dict
from modeling_vita.testing_utils import TINY_CODEC_CONFIG, tiny_speech_config, tiny_vita_config
from tests.utils import run_with_project_hidden

from .original_vita_tts import original_decoder_state_dict

HOP = TINY_CODEC_CONFIG["upsample_rates"][0] * TINY_CODEC_CONFIG["upsample_rates"][1]  # 16 samples a token
TEXT = torch.tensor([[11, 12, 13, 14, 15]])


def _speaking_model(seed: int = 0) -> VitaForConditionalGeneration:
    """A tiny VITA with a speech model that never ends on its own (EOS held down): lengths are set by the bound.
    The decoder has the larger random weights of `original_vita_tts` (same tiny shapes): with the small init of a new
    model, greedy decoding repeats one token, which would make chunk seams invisible."""
    torch.manual_seed(seed)
    model = VitaForConditionalGeneration(tiny_vita_config("qwen2", speech_config=tiny_speech_config())).eval()
    decoder = model.speech_model.decoder
    decoder.load_state_dict(convert_decoder_state_dict(original_decoder_state_dict(seed)))
    with torch.no_grad():
        decoder.out_proj.bias[decoder.config.eos_token_id] = -1e4
    return model


@pytest.fixture(scope="module")
def model():
    return _speaking_model()


def test_streamed_chunks_joined_equal_the_one_shot_clip(model):
    whole = model.generate_speech(TEXT, do_sample=False, max_speech_tokens=75)
    assert isinstance(whole, VitaSpeechOutput) and whole.sampling_rate == 24000
    assert whole.codec_tokens.shape == (1, 75) and whole.audio.shape == (1, 75 * HOP)
    assert whole.audio.dtype == torch.float32 and float(whole.audio.abs().max()) <= 1.0
    assert len(set(whole.codec_tokens[0, -40:].tolist())) > 5
    chunks = list(model.stream_speech(TEXT, do_sample=False, max_speech_tokens=75))
    assert [c.codec_tokens.shape[1] for c in chunks] == [20, 40, 15]  # the config's 20, then 40, then the rest
    assert [c.audio.shape[1] for c in chunks] == [20 * HOP, 40 * HOP, 15 * HOP]
    joined = torch.cat([c.audio for c in chunks], dim=-1)
    worst = float((joined - whole.audio).abs().max())
    print(f"streamed vs one shot: worst sample difference {worst:.1e}")
    assert worst < 1e-5
    assert torch.equal(torch.cat([c.codec_tokens for c in chunks], dim=-1), whole.codec_tokens)


def test_chunking_is_configurable_per_call_and_each_chunk_comes_once_its_look_ahead_exists(model):
    steps = []
    handle = model.speech_model.decoder.out_proj.register_forward_hook(lambda *args: steps.append(1))
    sizes, steps_at_chunk = [], []
    for chunk in model.stream_speech(TEXT, do_sample=False, max_speech_tokens=23, first_chunk_size=3,
                                     chunk_size=5, chunk_padding=4):  # fmt: skip
        sizes.append(chunk.codec_tokens.shape[1])
        steps_at_chunk.append(len(steps))
    handle.remove()
    assert sizes == [3, 5, 5, 5, 5]
    # A chunk of n tokens after s spoken ones goes out when s + n + 4 tokens exist, not at the end.
    assert steps_at_chunk == [3 + 4, 8 + 4, 13 + 4, 18 + 4, 23]
    whole = model.generate_speech(TEXT, do_sample=False, max_speech_tokens=23)
    chunks = model.stream_speech(
        TEXT, do_sample=False, max_speech_tokens=23, first_chunk_size=3, chunk_size=5, chunk_padding=4
    )
    joined = torch.cat([c.audio for c in chunks], -1)
    assert float((joined - whole.audio).abs().max()) < 1e-5


def test_sampling_is_reproducible_with_a_generator_and_streams_the_same_tokens(model):
    def sample(seed):
        return model.generate_speech(TEXT, max_speech_tokens=30, generator=torch.Generator().manual_seed(seed))

    first, again, other = sample(5), sample(5), sample(6)
    assert torch.equal(first.codec_tokens, again.codec_tokens) and torch.equal(first.audio, again.audio)
    assert not torch.equal(first.codec_tokens, other.codec_tokens)
    streamed = model.stream_speech(TEXT, max_speech_tokens=30, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.cat([c.codec_tokens for c in streamed], -1), first.codec_tokens)


def test_the_frames_are_the_llm_input_embeddings_cut_into_rows(model):
    frames = model.speech_frames(TEXT)
    embeddings = model.get_input_embeddings().weight[TEXT[0]]  # (5, 64): each token is two 32-wide rows
    assert frames.shape == (1, 10, 32)
    assert torch.equal(frames[0, 0], embeddings[0, :32]) and torch.equal(frames[0, 1], embeddings[0, 32:])
    assert torch.equal(frames[0, 9], embeddings[4, 32:])
    seen = []
    original = model.speech_model.decoder.generate_codec_tokens

    def spy(frames, **kwargs):
        seen.append(frames)
        return original(frames, **kwargs)

    model.speech_model.decoder.generate_codec_tokens = spy
    try:
        model.generate_speech(TEXT, do_sample=False, max_speech_tokens=2)
    finally:
        del model.speech_model.decoder.generate_codec_tokens
    assert torch.equal(seen[0], frames)


def test_a_speaker_can_be_given_as_a_list_or_a_tensor(model):
    default = model.generate_speech(TEXT, do_sample=False, max_speech_tokens=10)
    as_list = model.generate_speech(TEXT, do_sample=False, max_speech_tokens=10, global_tokens=[9, 2, 6, 5])
    as_tensor = model.generate_speech(TEXT, do_sample=False, max_speech_tokens=10,
                                      global_tokens=torch.tensor([[9, 2, 6, 5]]))  # fmt: skip
    assert torch.equal(as_list.audio, as_tensor.audio) and not torch.equal(as_list.audio, default.audio)
    assert torch.equal(as_list.codec_tokens, default.codec_tokens)  # the speaker changes the voice, not the tokens


def test_an_empty_answer_gives_an_empty_clip_and_no_chunk(model):
    empty = model.generate_speech(torch.zeros((1, 0), dtype=torch.long))
    assert empty.audio.shape == (1, 0) and empty.codec_tokens.shape == (1, 0) and empty.sampling_rate == 24000
    assert list(model.stream_speech(torch.zeros((1, 0), dtype=torch.long))) == []


def test_a_model_without_a_speech_decoder_says_so_and_names_the_way_out():
    model = VitaForConditionalGeneration(tiny_vita_config("qwen2")).eval()
    assert model.speech_model is None and model.config.speech_config is None
    for method in (model.generate_speech, model.stream_speech):
        with pytest.raises(ValueError, match=r"no speech decoder \(its config.speech_config is None\).*TTS engine"
                           r".*vita_tts_ckpt"):  # fmt: skip
            method(TEXT)


def test_bad_text_ids_and_nan_embeddings_are_refused_at_the_call():
    model = _speaking_model()
    with torch.no_grad():
        model.get_input_embeddings().weight[42] = float("nan")
    for method in (model.generate_speech, model.stream_speech):
        with pytest.raises(ValueError, match=r"`frames` holds NaN or inf in 2 of 4 rows; expected finite values"):
            method(torch.tensor([[41, 42]]))
        with pytest.raises(ValueError, match=r"shape \(2, 3\); expected \(1, T\)"):
            method(torch.ones(2, 3, dtype=torch.long))
        with pytest.raises(ValueError, match=r"ids in \[5, 5000\]; expected token ids in \[0, 1024\)"):
            method(torch.tensor([[5, 5000]]))
        with pytest.raises(ValueError, match=r"integer tensor of token ids.*got torch.float32"):
            method(torch.ones(1, 3))
        with pytest.raises(ValueError, match=r"`top_k` \(speech generation\) must be an integer >= 1, got 0"):
            method(TEXT, top_k=0)
    with pytest.raises(ValueError, match=r"`chunk_size` \(speech generation\) must be an integer >= 1, got 0"):
        model.stream_speech(TEXT, chunk_size=0)


def test_training_the_decoder_reaches_only_the_decoder(model):
    model.train()
    try:
        frames = model.speech_frames(TEXT)
        labels = torch.tensor([[1, 5, 9, 2, 30, 7]])
        out = model.speech_model(frames, labels=labels)
        assert torch.isfinite(out.loss) and out.logits.shape == (1, 7, 36)
        out.loss.backward()
    finally:
        model.eval()
    decoder, codec = model.speech_model.decoder, model.speech_model.codec
    assert all(p.grad is not None for p in decoder.parameters())
    assert all(p.grad is None for p in codec.parameters())
    assert all(p.grad is None for p in model.model.parameters()) and model.lm_head.weight.grad is None
    model.zero_grad(set_to_none=True)


def test_a_bfloat16_model_speaks_in_float32_audio():
    model = _speaking_model().to(torch.bfloat16)
    out = model.generate_speech(TEXT, do_sample=False, max_speech_tokens=6)
    assert out.audio.dtype == torch.float32 and out.audio.shape == (1, 6 * HOP)


def test_save_and_reload_speak_the_same_also_as_remote_code(model, tmp_path):
    whole = model.generate_speech(TEXT, do_sample=False, max_speech_tokens=12)
    model.save_pretrained(tmp_path / "vita")
    reloaded = VitaForConditionalGeneration.from_pretrained(tmp_path / "vita").eval()
    assert isinstance(reloaded.speech_model, VitaSpeechModel)
    speech_config = reloaded.config.speech_config
    assert speech_config.speech_settings == model.config.speech_config.speech_settings
    assert speech_config.decoder_config.hidden_size == 32 and speech_config.codec_config.codebook_size == 32
    again = reloaded.generate_speech(TEXT, do_sample=False, max_speech_tokens=12)
    assert torch.equal(again.codec_tokens, whole.codec_tokens) and torch.equal(again.audio, whole.audio)
    torch.save({"tokens": whole.codec_tokens, "audio": whole.audio}, tmp_path / "expected.pt")
    stdout = run_with_project_hidden(
        f"""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "vita")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        out = model.generate_speech(torch.tensor({TEXT.tolist()}), do_sample=False, max_speech_tokens=12)
        chunks = list(model.stream_speech(torch.tensor({TEXT.tolist()}), do_sample=False, max_speech_tokens=12,
                                          first_chunk_size=4, chunk_size=4, chunk_padding=2))
        assert torch.equal(out.codec_tokens, expected["tokens"]) and torch.equal(out.audio, expected["audio"])
        print("SPOKE", out.codec_tokens.shape[1], [c.codec_tokens.shape[1] for c in chunks])
        """,
        tmp_path,
    )
    assert "SPOKE 12 [4, 4, 4]" in stdout
    for attn_implementation in ("eager", "sdpa"):  # the prefix stays bidirectional under both
        loaded = VitaForConditionalGeneration.from_pretrained(
            tmp_path / "vita", attn_implementation=attn_implementation
        )
        assert loaded.speech_model.decoder.config._attn_implementation == attn_implementation
        spoken = loaded.eval().generate_speech(TEXT, do_sample=False, max_speech_tokens=12)
        assert torch.equal(spoken.codec_tokens, whole.codec_tokens)
        assert float((spoken.audio - whole.audio).abs().max()) < 1e-5


def test_a_flash_or_flex_request_runs_the_decoder_on_sdpa(model):
    decoder_config = model.speech_model.decoder.config
    for requested in ("flex_attention", "flash_attention_2"):
        decoder = VitaSpeechDecoder._from_config(decoder_config, attn_implementation=requested)
        assert decoder.config._attn_implementation == "sdpa"


def test_a_speech_checkpoint_switches_its_attention_and_the_trainer_scales_the_decoder_loss():
    model = _speaking_model()
    model.set_attn_implementation("sdpa")  # the codec has no attention and takes any request
    assert model.config._attn_implementation == "sdpa"
    # The decoder's loss is a mean that ignores num_items_in_batch: the Trainer must do the accumulation scaling.
    assert model.speech_model.decoder.accepts_loss_kwargs is False
