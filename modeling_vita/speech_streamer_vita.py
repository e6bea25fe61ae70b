"""Speech while `generate` writes the answer: a streamer that feeds VITA-1.5's speech decoder as the text comes.

`VitaSpeechStreamer` is a `VitaTurnStreamer` (`generation_vita.py`: the state token read first, then the answer's
text deltas) that hands each complete sentence to the checkpoint's own voice (`duplex_model_voice.ModelVoice`, on
the speech thread of an `AnswerSpeaker`), so the first audio chunk is decoded while the LLM is still writing the
rest. The chunks come out of `audio()` in order, as `AudioOut` records (`audio`, `sampling_rate`, `text`):

    streamer = VitaSpeechStreamer(model, processor)
    run_turn(model, inputs, streamer)          # or model.generate(**inputs, streamer=streamer) with a state token
    for chunk in streamer.audio(): play(chunk.audio, chunk.sampling_rate)

The duplex session drives the same code (its turn streamer's text goes to the same speaker and voice).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

from .duplex_events import AudioOut, ResponseDone, TextDelta
from .duplex_model_voice import ModelVoice
from .duplex_speech_output import AnswerSpeaker
from .generation_vita import VitaTurnStreamer, checkpoint_state_tokens, state_token_sequences

logger = logging.getLogger(__name__)

_DONE = object()


class VitaSpeechStreamer(VitaTurnStreamer):
    """Streams the answer's speech in the model's own voice while `generate` runs.

    Args:
        model: a `VitaForConditionalGeneration` with a speech model (a VITA-1.5 checkpoint with its speech decoder).
        processor: its `VitaProcessor`.
        do_sample, speech_kwargs: passed to `ModelVoice` (and on to `stream_speech`).
        timeout: `audio()` gives up after this many seconds without a chunk.
    """

    def __init__(
        self, model: Any, processor: Any, do_sample: bool = True, timeout: float = 120.0, **speech_kwargs: Any
    ) -> None:
        spellings = state_token_sequences(processor.tokenizer, checkpoint_state_tokens(model, processor))
        super().__init__(processor.tokenizer, spellings, on_text=self._on_text)
        self.voice = ModelVoice(model, processor.tokenizer, do_sample=do_sample, **speech_kwargs)
        self.timeout = timeout
        self.errors: list[str] = []
        self._chunks: queue.Queue[AudioOut | object] = queue.Queue()
        self._speaker = AnswerSpeaker(self.voice, self._chunks.put, self.errors.append)

    def _on_text(self, delta: str) -> None:
        self._speaker.feed(TextDelta(0.0, text=delta, turn_id=0))

    def end(self) -> None:
        super().end()
        self._speaker.feed(ResponseDone(0.0, turn_id=0))  # the unfinished last sentence is spoken too
        # `generate` returns now; the speech thread ends once every sentence is spoken, then `audio()` ends.
        threading.Thread(target=self._finish, name="vita-speech-streamer-end", daemon=True).start()

    def _finish(self) -> None:
        self._speaker.close()
        self._chunks.put(_DONE)

    def audio(self) -> Iterator[AudioOut]:
        """The spoken chunks in order, until the answer is spoken; a failed synthesis is in `errors`."""
        while True:
            try:
                item = self._chunks.get(timeout=self.timeout)
            except queue.Empty:
                raise TimeoutError(f"no speech chunk within {self.timeout} s; expected generate to end") from None
            if item is _DONE:
                return
            yield item


__all__ = ["VitaSpeechStreamer"]
