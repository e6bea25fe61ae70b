"""The duplex session speaking with the checkpoint's own voice (`duplex_model_voice.py`): a tiny VITA-1.5 with a speech
decoder and codec, a scripted answer; chunks reach the player as they are decoded, a cut stops them within one chunk,
and a checkpoint without a voice says so or falls back to a TTS engine."""

import numpy as np
import pytest
import torch

from modeling_vita.duplex_events import AudioOut, Interrupted, TextDelta
from modeling_vita.duplex_model_voice import ModelVoice, has_model_voice
from modeling_vita.duplex_speech_output import AnswerSpeaker, EspeakTTS, PiperTTS, make_tts
from processing_vita.testing_utils import tiny_vita_processor
from tests.modeling_vita.test_speech_vita import _speaking_model


@pytest.fixture(scope="module")
def voice():
    model = _speaking_model()
    model.config.speech_config.max_speech_tokens = 100
    model.speech_model.config.max_speech_tokens = 100  # 100 tokens = 3 chunks of (20, 40, 40)
    return ModelVoice(model, tiny_vita_processor().tokenizer, do_sample=False)


def test_model_voice_streams_the_same_audio_it_synthesizes_whole(voice):
    chunks = list(voice.stream("the circle is red."))
    assert len(chunks) >= 2 and all(rate == 24000 for _, rate in chunks)
    whole, rate = voice.synthesize("the circle is red.")
    assert rate == 24000 and np.allclose(np.concatenate([audio for audio, _ in chunks]), whole, atol=1e-6)
    expected = voice.model.generate_speech(voice.text_ids("the circle is red."), do_sample=False).audio[0]
    assert np.allclose(whole, expected.numpy(), atol=1e-6)


def test_text_is_prepared_as_vita_15_prepares_it(voice):
    state = next(iter(voice.model.config.state_tokens.values()))
    tokenizer = voice.tokenizer
    assert voice.text_ids(f"{state} The Circle</s>").tolist()[0] == tokenizer.encode(
        "the circle", add_special_tokens=False
    )


def test_a_cut_answer_stops_within_one_chunk(voice):
    ready, stopped = [], []

    def on_ready(event: AudioOut) -> None:
        ready.append(event)
        if len(ready) == 1:
            speaker.silence(event.turn_id)  # the user interrupts while the first chunk plays
            stopped.append(len(ready))

    speaker = AnswerSpeaker(voice, on_ready, on_error=lambda message: None)
    try:
        speaker.feed(TextDelta(0.0, text="the circle is red. ", turn_id=1))
        speaker._queue.join()
    finally:
        speaker.close()
    assert len(ready) == 1 and ready[0].text == "the circle is red." and ready[0].sampling_rate == 24000
    # Uncut, the same sentence gives every chunk, the sentence's text on the first only.
    ready.clear()
    speaker = AnswerSpeaker(voice, ready.append, on_error=lambda message: None)
    try:
        speaker.feed(TextDelta(0.0, text="the circle is red. ", turn_id=2))
        speaker.feed(Interrupted(0.0, turn_id=3))
        speaker._queue.join()
    finally:
        speaker.close()
    assert len(ready) >= 2 and [e.text for e in ready[1:]] == [""] * (len(ready) - 1)


def test_a_checkpoint_without_a_voice_says_so_or_falls_back(voice):
    from modeling_vita import VitaForConditionalGeneration
    from modeling_vita.testing_utils import tiny_vita_config

    torch.manual_seed(0)
    mute = VitaForConditionalGeneration(tiny_vita_config()).eval()
    processor = tiny_vita_processor()
    assert not has_model_voice(mute) and has_model_voice(voice.model)
    with pytest.raises(ValueError, match="no speech decoder.*tts='piper'"):
        make_tts("model", mute, processor)
    assert isinstance(make_tts("auto", voice.model, processor), ModelVoice)
    assert isinstance(make_tts("auto", mute, processor), (PiperTTS, EspeakTTS))


def test_nan_in_the_answer_embeddings_is_an_error_event_and_speaking_goes_on(voice):
    errors, ready = [], []
    embeddings = voice.model.get_input_embeddings()
    speaker = AnswerSpeaker(voice, ready.append, on_error=errors.append)
    original = embeddings.weight.data.clone()
    try:
        with torch.no_grad():
            embeddings.weight[:] = float("nan")
        speaker.feed(TextDelta(0.0, text="the circle. ", turn_id=1))
        speaker._queue.join()
        with torch.no_grad():
            embeddings.weight[:] = original
        speaker.feed(TextDelta(0.0, text="it is red. ", turn_id=2))
        speaker._queue.join()
    finally:
        embeddings.weight.data.copy_(original)
        speaker.close()
    assert len(errors) == 1 and "turn 1" in errors[0] and "NaN" in errors[0]
    assert ready and {event.turn_id for event in ready} == {2}


def test_the_speech_streamer_speaks_the_answer_generate_writes_sentence_by_sentence(voice):
    from modeling_vita.generation_vita import run_turn
    from modeling_vita.speech_streamer_vita import VitaSpeechStreamer
    from processing_vita import VitaState

    model, processor = voice.model, tiny_vita_processor()
    messages = [{"role": "user", "content": [{"type": "text", "text": "say something"}]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    streamer = VitaSpeechStreamer(model, processor, do_sample=False)
    # The random model answers a forced query with random words: what matters is that they are spoken, in order.
    kwargs = {"max_new_tokens": 24, "min_new_tokens": 24, "do_sample": False}
    run_turn(model, inputs, streamer, [VitaState.QUERY_TEXT], kwargs)
    chunks = list(streamer.audio())
    assert streamer.text and chunks and not streamer.errors and all(c.sampling_rate == 24000 for c in chunks)
    sentences = [c.text for c in chunks if c.text]
    assert all(sentence in streamer.text for sentence in sentences)
    first = [c.audio for c in chunks[: next((i for i, c in enumerate(chunks[1:], 1) if c.text), len(chunks))]]
    assert np.allclose(np.concatenate(first), voice.synthesize(sentences[0])[0], atol=1e-6)
