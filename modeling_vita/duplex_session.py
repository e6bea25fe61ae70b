"""The threaded edge of VITA's duplex interaction: audio in, VAD, one model in two roles, events out.

The turn-taking logic is pure and lives in `duplex_state.py` (events in, events and actions out), the speech
segmentation in `duplex_vad.py`; this module owns only threads, queues, the clock and the model
(docs/architecture.md draws the whole path).

Threads of a `DuplexSession`:
    - the *dispatcher* owns the `VADSegmenter`, the `DuplexStateMachine` and `SessionState`. `push_audio`,
      `push_text` and `push_image` only put a message (`duplex_inbox.py`) on its queue, so they return at once
      whatever the model is doing; the workers report on the same queue, so every event is handled in one order by
      one thread;
    - one *turn worker* per `StartTurn` (`duplex_turns.py`) runs `run_turn` (`generation_vita.py`) with its own KV
      cache (one copy of the weights; the deciding turn and the answering turn are two roles over it); a noisy turn
      ends at its state token, and `CancelTurn` ends any turn within one decoding step through its stop switch;
    - an optional *speech* thread speaks the answer sentence by sentence and reports `AudioOut` events.

Bad input: the caller's thread only copies what it pushes (a closed session raises `ValueError`, as does a
`push_text` that is no text or a `playback_started` RMS that is no finite number >= 0); the dispatcher validates
each chunk (`duplex_audio_input`) and image (`duplex_frames`) as it takes it, so a bad one becomes one `error` event
naming what was found and expected, never enters the VAD or the visual context, and the next good input is answered.

Interrupts: a `KeyboardInterrupt` or `SystemExit` raised inside the model, the speech engine or a callback the
dispatcher runs would otherwise end that thread alone (Python prints it, or drops a `SystemExit` silently) and leave
its turn running for ever in the state machine. It is caught there instead: the turn ends with an `error` event like
any failed turn (the state machine commits or drops it and stays consistent), and the exception is re-raised in the
caller's thread at its next call on the session (`events`, `run`, `wait_idle`, a push, `flush`, a playback report),
the thread that can act on it (stop the program, or catch it and go on: the session stays usable). A Ctrl-C in the
caller's own thread reaches it directly, as always, and `close()` then stops the turns.

Clock: every event time is in seconds on the input audio clock, i.e. the 16 kHz samples the dispatcher has taken in
so far divided by 16000. Events made by the model (decision, text, completion) carry the clock at the moment the
dispatcher handles them, i.e. how much audio had arrived when the model produced them. `StateDecided.latency` is the
audio that arrived between the end of the input and the decision, so it only measures wall time in real-time use.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from .duplex_audio_input import SAMPLING_RATE, EchoGuard, as_float32_mono, checked_rate, copy_chunk
from .duplex_events import (
    Action,
    AnswerDucked,
    AnswerResumed,
    AudioOut,
    CancelTurn,
    Error,
    Event,
    ImageInput,
    Interrupted,
    SpeakAhead,
    StartTurn,
    TextInput,
    Turn,
)
from .duplex_frames import checked_frame, copy_frame
from .duplex_inbox import (
    AudioChunk,
    Flush,
    ImageFrame,
    InboxMessage,
    PendingInterrupt,
    PlaybackReport,
    Raised,
    SpeechReady,
    Stop,
    Sync,
    TurnFinished,
    TypedText,
    WorkerEvent,
)
from .duplex_session_options import DEFAULT_GENERATION_KWARGS, SessionOptions, SessionState
from .duplex_speech_output import AnswerSpeaker, TTSEngine
from .duplex_state import DuplexStateMachine
from .duplex_turn_detector import TurnDetector, TurnParams, load_turn_detector
from .duplex_turns import TurnWorkers
from .duplex_vad import SpeechScorer, VADParams, VADSegmenter
from .generation_vita import checkpoint_state_tokens, state_token_sequences
from .prompt_cache_vita import PromptCache, context_budget

logger = logging.getLogger(__name__)

_RAISE = object()  # in the outbox right after the `error` of an interrupt: `events` raises it there, in order


class DuplexSession:
    """A live duplex conversation with one VITA model: push audio, text and images; read events.

    Args:
        model: a `VitaForConditionalGeneration` (or anything with a compatible `generate` and a `config` holding
            `state_tokens`).
        processor: a `VitaProcessor` (chat template, decoding).
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
        reuse_prefix: keep the conversation's KV cache between turns and prefill only what is new (same answers;
            `prompt_cache_vita.py`); the prompt is bounded by the model's context either way.
        turn: when the end-of-turn model is asked during a silence (`TurnParams`; default `TurnParams()`).
        turn_detector: decides whether a silence ends the user's turn (`duplex_turn_detector.py`): "auto" (Smart
            Turn when its ONNX file is installed, else the silence rule of `vad.stop_secs`, logged once), None
            (the silence rule), or any object with `probability_complete(audio16k)` (tests pass a scripted one).
        backend: "transformers" (turns run `model.generate`) or "vllm" (turns are requests to a vLLM engine,
            `duplex_vllm_backend.py`; `model` is then the folder it serves, unless `engine` is given).
        engine: for "vllm", a `duplex_vllm_backend.VllmEngine` that several sessions may share.
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
        reuse_prefix: bool = True,
        turn: TurnParams | None = None,
        turn_detector: TurnDetector | str | None = "auto",
        backend: str = "transformers",
        engine: Any = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.tts = tts
        self.on_audio = on_audio
        self.options = SessionOptions(
            generation_kwargs={**DEFAULT_GENERATION_KWARGS, **(generation_kwargs or {})},
            max_frames=max_frames,
            max_history_turns=max_history_turns,
            restart_with_consolidated_history=restart_with_consolidated_history,
            echo_margin_db=float(echo_margin_db),
        )
        self._segmenter = VADSegmenter(
            vad, scorer=vad_scorer, turn=turn, turn_detector=load_turn_detector(turn_detector)
        )
        self._machine = DuplexStateMachine(
            max_frames=max_frames,
            max_history_turns=max_history_turns,
            restart_with_consolidated_history=restart_with_consolidated_history,
            speaks_answers=tts is not None,
        )
        self._machine_lock = threading.Lock()  # `history` is read from the caller's thread
        self._state = SessionState(echo=EchoGuard(self.options.echo_margin_db))
        self._inbox: queue.Queue[InboxMessage] = queue.Queue()
        self._outbox: queue.Queue[Event | object | None] = queue.Queue()
        spellings = state_token_sequences(processor.tokenizer, checkpoint_state_tokens(model, processor))
        max_new_tokens = int(self.options.generation_kwargs.get("max_new_tokens") or 64)
        self.prompts = PromptCache(
            model, processor, enabled=reuse_prefix, budget=context_budget(model, processor, max_new_tokens, max_frames)
        )
        workers, runs_on = TurnWorkers, model
        if backend == "vllm":  # by name: vLLM's module stays out of the remote-code closure (relative imports)
            workers = importlib.import_module(f"{__package__}.duplex_vllm_backend").VllmTurnWorkers
            runs_on = engine if engine is not None else model
        elif backend != "transformers":
            raise ValueError(f"backend is 'transformers' or 'vllm', found {backend!r}")
        self._workers = workers(
            runs_on, processor, spellings, self.options.generation_kwargs, self._inbox.put, self.prompts
        )
        self._closed = False
        self._interrupt = PendingInterrupt()
        self._images_seen = 0  # numbers the images in error messages (dispatcher thread only)
        self._speaker = None
        if tts is not None:
            self._speaker = AnswerSpeaker(tts, self._speech_ready, self._speech_failed, self._speech_interrupted)
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="vita-duplex-dispatcher", daemon=True)
        self._dispatcher.start()

    # -- public API ---------------------------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """Seconds of input audio taken in so far (the clock of every event)."""
        return self._state.input_secs

    @property
    def generation_kwargs(self) -> dict[str, Any]:
        return self.options.generation_kwargs

    @property
    def history(self) -> list[Turn]:
        """Consolidated turns (user/assistant pairs); an interrupted answer is marked and holds its partial text."""
        with self._machine_lock:
            return self._machine.history

    def push_audio(self, chunk: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> None:
        """Queue a microphone chunk (any rate, int16 or float, mono). Returns at once; a bad chunk gives an `error`."""
        self._check_open()
        samples, problem = copy_chunk(chunk)
        self._inbox.put(AudioChunk(samples, sampling_rate, problem))

    def push_text(self, text: str) -> None:
        """A typed query: it interrupts the current answer and is answered with state `query_text`."""
        self._check_open()
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"push_text takes a non-empty str, found {type(text).__name__} {text!r:.80}")
        self._inbox.put(TypedText(text))

    def push_image(self, image: Any) -> None:
        """A still image or a video frame; the latest ones are shown to the model with the next inputs. Returns at
        once; a bad image gives an `error` and is not kept."""
        self._check_open()
        self._inbox.put(ImageFrame(copy_frame(image)))

    def playback_started(self, rms: float | None = None) -> None:
        """The caller's speaker is playing the assistant's audio (RMS of that audio; default the latest `AudioOut`)."""
        self._check_open()
        if rms is not None and not (isinstance(rms, int | float | np.integer | np.floating) and 0 <= rms < np.inf):
            raise ValueError(f"playback_started takes an RMS that is a finite number >= 0 or None, found {rms!r}")
        self._inbox.put(PlaybackReport(float(rms) if rms is not None else max(self._state.echo.playing_rms, 1e-3)))

    def playback_stopped(self) -> None:
        """The caller's speaker stopped playing the assistant's audio."""
        self._check_open()
        self._inbox.put(PlaybackReport(None))

    def flush(self) -> None:
        """End of the input stream: close an open speech segment as if silence followed."""
        self._check_open()
        self._inbox.put(Flush())

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Yield events as they come; stops after `timeout` seconds without one (None: until `close`). Raises, after
        its `error`, a `KeyboardInterrupt`/`SystemExit` that hit one of the session's threads (module docstring)."""
        while True:
            try:
                event = self._outbox.get(timeout=0 if self._closed else timeout)
            except queue.Empty:
                return
            if event is None:  # put by `close`
                return
            if event is _RAISE:
                self._interrupt.raise_if_any()  # unless another call on the session raised it already
                continue
            yield event

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every queued input is handled and no turn (or speech synthesis) is running; False on timeout."""
        if self._closed:
            return not self._workers.running
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._sync(max(deadline - time.monotonic(), 0.0))
            self._interrupt.raise_if_any()
            speaking = self._speaker is not None and self._speaker.busy
            if not self._workers.running and not speaking and self._inbox.empty():
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
        sampling_rate = checked_rate(sampling_rate)  # a bad rate fails the whole recording, here
        if isinstance(audio_stream, np.ndarray) and audio_stream.ndim == 1:
            step = max(int(round(chunk_secs * sampling_rate)), 1)
            recording = audio_stream
            audio_stream = (recording[i : i + step] for i in range(0, len(recording), step))
        started, played = time.monotonic(), 0.0
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
        """Stop every turn and join every thread the session started. Idempotent; callable from an event callback."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(Stop())
        if self._dispatcher is not threading.current_thread():
            self._dispatcher.join()
        self._workers.stop_all()
        if self._speaker is not None:
            self._speaker.close()
        self._outbox.put(None)

    def __enter__(self) -> DuplexSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- dispatcher ---------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the DuplexSession is closed; expected an open session (create a new one)")
        self._interrupt.raise_if_any()

    def _sync(self, timeout: float) -> None:
        done = threading.Event()
        self._inbox.put(Sync(done))
        done.wait(timeout)

    def _dispatch_loop(self) -> None:
        while True:
            message = self._inbox.get()
            if isinstance(message, Stop):
                return
            try:
                self._dispatch(message)
            except Exception as error:  # the session must outlive any bug in one step
                logger.exception("duplex dispatcher failed on %s", type(message).__name__)
                self._outbox.put(Error(self._state.input_secs, message=f"{type(error).__name__}: {error}"))
            except BaseException as error:  # KeyboardInterrupt, SystemExit: for the caller's thread (module docstring)
                logger.warning("duplex dispatcher stopped by %s on %s", type(error).__name__, type(message).__name__)
                name = type(message).__name__
                self._outbox.put(Error(self._state.input_secs, message=f"{type(error).__name__} on {name}: {error}"))
                self._interrupt.keep(error)
                self._outbox.put(_RAISE)

    def _dispatch(self, message: InboxMessage) -> None:
        if isinstance(message, AudioChunk):
            self._on_audio(message)
        elif isinstance(message, TypedText):
            self._handle(TextInput(self._state.input_secs, text=message.text))
        elif isinstance(message, ImageFrame):
            self._on_image(message.image)
        elif isinstance(message, WorkerEvent):
            self._handle(self._restamp(message.event))
        elif isinstance(message, TurnFinished):
            self._workers.finished(message.turn_id)
        elif isinstance(message, SpeechReady):
            self._on_speech_ready(message.audio_out)
        elif isinstance(message, PlaybackReport):
            self._state.echo.reported(message.rms)
        elif isinstance(message, Flush):
            for event in self._segmenter.flush():
                self._handle(event)
        elif isinstance(message, Sync):
            message.done.set()
        elif isinstance(message, Raised):
            self._handle(self._restamp(message.error))  # the turn ends before the caller can see the exception
            self._interrupt.keep(message.exception)
            self._outbox.put(_RAISE)
        else:
            raise TypeError(f"unknown inbox message {type(message).__name__}")

    def _restamp(self, event: Event) -> Event:
        # Worker events get the audio clock of the moment they are handled (see the module docstring).
        return dataclasses.replace(event, time=self._state.input_secs)

    def _on_audio(self, message: AudioChunk) -> None:
        try:
            if message.problem is not None:
                raise ValueError(message.problem)
            samples, rate = as_float32_mono(message.samples), checked_rate(message.sampling_rate)
            if self._state.echo.is_echo(samples, self._state.input_secs):
                samples = np.zeros_like(samples)
            events = self._segmenter.push(samples, rate)
        except ValueError as error:
            self._outbox.put(Error(self._state.input_secs, message=f"bad audio chunk skipped: {error}"))
            return
        self._state.input_secs += len(samples) / rate
        for event in events:
            self._handle(event)

    def _on_image(self, image: Any) -> None:
        self._images_seen += 1
        try:
            frame = checked_frame(image, self._images_seen - 1)
        except ValueError as error:
            self._outbox.put(Error(self._state.input_secs, message=f"bad image skipped: {error}"))
            return
        self._handle(ImageInput(self._state.input_secs, image=frame))

    def _handle(self, event: Event) -> None:
        with self._machine_lock:
            outputs = self._machine.handle(event)
        self._carry_out(outputs)

    def _carry_out(self, outputs: list[Event | Action]) -> None:
        for output in outputs:
            if isinstance(output, StartTurn):
                self._workers.start(output)
            elif isinstance(output, CancelTurn):
                self._cancel_turn(output.turn_id, output.reason)
            elif isinstance(output, SpeakAhead):
                if self._speaker is not None:
                    self._speaker.feed_ahead(output.event)
            elif isinstance(output, AudioOut):
                self._state.echo.queued(output.audio, output.sampling_rate, self._state.input_secs)
                self._outbox.put(output)
                if self.on_audio is not None:
                    self.on_audio(output)
            elif isinstance(output, Event):
                self._outbox.put(output)
                self._speak(output)

    def _cancel_turn(self, turn_id: int, reason: str = "interrupted") -> None:
        self._workers.cancel(turn_id, reason)
        if self._speaker is not None:
            self._speaker.silence(turn_id)

    # -- speech output and echo guard -----------------------------------------------------------------------------

    def _speak(self, event: Event) -> None:
        # The player obeys the same events: it stops an interrupted answer, pauses a ducked one, plays a resumed one.
        if isinstance(event, Interrupted):
            self._state.echo.cut(self._state.input_secs)
        elif isinstance(event, AnswerDucked):
            self._state.echo.pause(self._state.input_secs)
        elif isinstance(event, AnswerResumed):
            self._state.echo.resume(self._state.input_secs)
        if self._speaker is not None:
            self._speaker.feed(event)

    def _speech_ready(self, event: AudioOut) -> None:
        self._inbox.put(SpeechReady(event))  # from the speech thread: handled in order by the dispatcher

    def _speech_failed(self, message: str) -> None:
        self._inbox.put(WorkerEvent(Error(0.0, message=message, turn_id=None)))

    def _speech_interrupted(self, message: str, exception: BaseException) -> None:
        self._inbox.put(Raised(Error(0.0, message=message, turn_id=None), exception))

    def _on_speech_ready(self, event: AudioOut) -> None:
        if self._speaker is None or self._speaker.is_silenced(event.turn_id):
            return  # the answer was interrupted while this sentence was being synthesized
        self._handle(self._restamp(event))  # the machine tracks what plays when (ducking, history, speculation)


__all__ = ["DuplexSession", "SessionOptions", "SessionState"]
