"""The turn runner of a duplex session on vLLM's async engine: `DuplexSession(..., backend="vllm", engine=...)`.

`VllmTurnWorkers` has `TurnWorkers`' interface (`start`, `cancel`, `finished`, `stop_all`, `running`) and posts the
same inbox messages (`duplex_turns.py`), so the session, its state machine and its events do not change. Each turn is
one request to a `vllm.v1.engine.async_llm.AsyncLLM`:

- the prompt is the turn's chat messages (`StartTurn.messages()`, the history shown within the context budget)
  rendered by `VitaProcessor.apply_chat_template(..., tokenize=False)`, with the media as `multi_modal_data`
  (`{"audio": [(samples, 16000), ...], "image": [PIL, ...]}`); the plugin's processor (`vllm_vita.processing`)
  expands the placeholders exactly as `VitaProcessor` does;
- the first generated tokens are constrained to spell an allowed state token by the plugin's engine-level logits
  processor (`vllm_vita.state_logits`, given the spellings in `SamplingParams.extra_args`; it leaves the answer free
  after the state token, which vLLM's `allowed_token_ids` could not);
- the streamed token ids go to the same `VitaTurnStreamer` as transformers' turns: it decides the state from the
  first tokens, and a noisy turn's request is aborted at its state token;
- `cancel` (the session's `CancelTurn`) aborts the request at once through `AsyncLLM.abort`: the engine drops it
  from its batch before its next step.

One `VllmEngine` (an `AsyncLLM` on its own event-loop thread) serves any number of sessions: their turns are
requests in one continuously batched engine. Prefix reuse across turns is vLLM's own prefix caching (the session's
`PromptCache` is for transformers' KV cache and is not used here, except for its context budget).

vLLM is imported only inside functions, so this module imports without it; nothing in `modeling_vita/__init__.py`
or the remote-code closure imports it (the session loads it by name). vLLM 0.32 pins transformers < 5.20; there
`modeling_vita` imports with its duplex runtime (this module included) and without its model classes
(`modeling_vita/__init__.py`). `VllmEngine.run_turn` runs one turn outside a session (the Space's chat tab).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .duplex_events import Error, ResponseDone, StartTurn, VitaState
from .duplex_inbox import InboxMessage, Raised, TurnFinished, WorkerEvent
from .duplex_turns import turn_streamer
from .generation_vita import StateSpellings, VitaTurnStreamer
from .prompt_cache_vita import ContextBudget, PromptCache

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16_000
# The plugin's names (`vllm_vita.state_logits`), repeated so that this module needs neither vLLM nor the plugin.
STATE_LOGITS_PROCESSOR = "vllm_vita.state_logits:VitaStateLogitsProcessor"
STATE_SPELLINGS_KEY = "vita_state_spellings"
REQUEST_ID_KEY = "vita_request_id"  # in extra_args too, so engine-side tools can name the request
# transformers `generate` arguments with a vLLM `SamplingParams` equivalent.
SUPPORTED_GENERATION_KWARGS = frozenset(
    {"max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "seed"}
)
_STOP_TIMEOUT_SECONDS = 30.0


class VllmEngine:
    """One vLLM `AsyncLLM` running on a private event-loop thread, shared by the sessions given it as `engine`.

    Args:
        model: the converted VITA folder (or Hub id) vLLM serves.
        **engine_args: `vllm.AsyncEngineArgs` fields (`dtype`, `max_model_len`, `max_num_seqs`, ...). The state
            constraint (`vllm_vita.state_logits`) is added to `logits_processors`.

    vLLM starts its engine-core process by spawning when other threads run (this loop's), so a script creating one
    needs the `if __name__ == "__main__":` guard.
    """

    def __init__(self, model: str, **engine_args: Any) -> None:
        self.model = str(model)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vita-vllm-loop", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            # Built on the loop thread: the engine's output handler and sockets belong to that loop.
            self.engine = self.run(self._create(engine_args))
        except BaseException:
            self._stop_loop()
            raise

    async def _create(self, engine_args: dict[str, Any]) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        processors = list(engine_args.pop("logits_processors", None) or [])
        if STATE_LOGITS_PROCESSOR not in processors:
            processors.append(STATE_LOGITS_PROCESSOR)
        return AsyncLLM.from_engine_args(
            AsyncEngineArgs(model=self.model, logits_processors=processors, **engine_args)
        )

    def load_processor(self, **kwargs: Any) -> Any:
        """The served folder's `VitaProcessor`. Loaded after the engine, whose start ran vLLM's plugins: under vLLM's
        transformers the plugin (`vllm_vita.register`) is what makes VITA's processor classes load."""
        from processing_vita import VitaProcessor

        return VitaProcessor.from_pretrained(self.model, **kwargs)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def max_model_len(self) -> int:
        return int(self.engine.model_config.max_model_len)

    def media_limits(self) -> dict[str, int]:
        """The most items of each kind a prompt may carry (`limit_mm_per_prompt`; vLLM rejects a request over it)."""
        config = self.engine.model_config.multimodal_config
        return {kind: int(config.get_limit_per_prompt(kind)) for kind in ("image", "video", "audio")} if config else {}

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Run `coroutine` on the engine's loop; returns at once."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run `coroutine` on the engine's loop and wait for its result (not from the loop thread)."""
        return self.submit(coroutine).result(timeout)

    def run_turn(
        self,
        prompt: dict[str, Any],
        streamer: VitaTurnStreamer,
        allowed_states: list[VitaState] | None = None,
        generation_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """One turn outside a session, the vLLM counterpart of `generation_vita.run_turn` (the Space's chat tab):
        `prompt` from `vllm_prompt`, the answer opens with one of `allowed_states` (default all) and streams into
        `streamer`; blocks until it ends. Setting `streamer.stop` from another thread aborts the request at its next
        output. Not from the engine's loop thread."""
        request_id = f"vita-turn-{uuid.uuid4().hex[:12]}"
        spellings = opening_spellings(streamer.spellings, allowed_states)
        params = sampling_params(dict(generation_kwargs or {}), spellings, request_id)
        self.run(stream_request(self.engine, prompt, params, request_id, streamer, streamer.stop))

    def abort_soon(self, request_id: str) -> None:
        """Abort a request from any thread, without waiting (a request not yet added is not found: callers check
        their stop switch after adding)."""
        if not self._closed:
            self.submit(self._abort(request_id))

    async def _abort(self, request_id: str) -> None:
        try:
            await self.engine.abort(request_id)
        except Exception:  # an engine that died meanwhile: its requests are gone anyway
            logger.exception("aborting vLLM request %s failed", request_id)

    def close(self) -> None:
        """Shut the engine down (its engine-core process too) and stop the loop thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.run(self._shutdown(), timeout=60)
        finally:
            self._stop_loop()

    async def _shutdown(self) -> None:
        self.engine.shutdown()
        # Dropped here, while the interpreter is whole: AsyncLLM.__del__ shuts down again, which fails at exit.
        self.engine = None

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def start_engine(model: str, **engine_args: Any) -> tuple[VllmEngine, Any]:
    """A `VllmEngine` on `model` and the folder's processor, for a program that serves one checkpoint (`vita-duplex
    --backend vllm`, the Space): without vLLM an `ImportError` says what to install; the engine is closed again when
    the processor does not load."""
    try:
        engine = VllmEngine(model, **engine_args)
    except ImportError as error:
        raise ImportError(f"the vLLM backend needs vLLM (pip install 'vita-hf[vllm]'): {error}") from error
    try:
        return engine, engine.load_processor()
    except BaseException:
        engine.close()
        raise


def opening_spellings(spellings: StateSpellings, allowed_states: list[Any] | None) -> list[list[int]]:
    """The token ids an answer may open with: the spellings of `allowed_states` (state names or `VitaState`s; None:
    every state)."""
    states = list(spellings) if allowed_states is None else [VitaState(state) for state in allowed_states]
    return [list(spellings[state]) for state in states]


def sampling_params(generation_kwargs: dict[str, Any], spellings: list[list[int]], request_id: str) -> Any:
    """vLLM `SamplingParams` for transformers-style `generation_kwargs` (`SUPPORTED_GENERATION_KWARGS`); the answer
    streams as token-id deltas (the streamer decodes) and opens with one of `spellings`."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    unknown = sorted(set(generation_kwargs) - SUPPORTED_GENERATION_KWARGS)
    if unknown:
        raise ValueError(
            f"the vLLM backend cannot apply generation_kwargs {unknown}; expected only "
            f"{sorted(SUPPORTED_GENERATION_KWARGS)}"
        )
    kwargs = generation_kwargs
    sample = bool(kwargs.get("do_sample", False))
    return SamplingParams(
        max_tokens=int(kwargs.get("max_new_tokens") or 64),
        min_tokens=int(kwargs.get("min_new_tokens") or 0),
        temperature=float(kwargs.get("temperature", 1.0)) if sample else 0.0,
        top_p=float(kwargs.get("top_p", 1.0)) if sample else 1.0,
        top_k=int(kwargs.get("top_k") or 0) if sample else 0,
        repetition_penalty=float(kwargs.get("repetition_penalty", 1.0)),
        seed=kwargs.get("seed"),
        detokenize=False,  # VitaTurnStreamer decodes; vLLM's detokenizer would be work twice
        output_kind=RequestOutputKind.DELTA,
        extra_args={STATE_SPELLINGS_KEY: spellings, REQUEST_ID_KEY: request_id},
    )


def vllm_prompt(processor: Any, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The engine prompt of chat `messages`: the rendered text (one placeholder per item) and its media by kind."""
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    media: dict[str, list[Any]] = {"image": [], "video": [], "audio": []}
    for message in messages:
        content = message.get("content")
        for block in content if isinstance(content, list) else ():
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in media:
                item = block[kind]
                if kind == "audio" and not isinstance(item, tuple):
                    item = (np.asarray(item, dtype=np.float32), SAMPLING_RATE)  # the session's clips are 16 kHz
                if kind == "video" and isinstance(item, (str, os.PathLike, bytes)):
                    item = video_frames(processor, item, len(media["video"]))
                media[kind].append(item)
    data = {kind: items for kind, items in media.items() if items}
    return {"prompt": text, "multi_modal_data": data} if data else {"prompt": text}


def video_frames(processor: Any, video: str | os.PathLike | bytes, index: int = 0) -> np.ndarray:
    """A video file as the (T, H, W, C) uint8 frames vLLM takes: decoded and sampled by the checkpoint's video
    processor, as `VitaProcessor` samples a file (a sampled clip is kept whole when it is sampled again: its frames
    lie one a second apart, within the frame limits)."""
    frames = processor.video_processor.load_frames(video, index, None, True)
    return np.stack([np.asarray(frame.convert("RGB")) for frame in frames])


def estimated_prompt_tokens(processor: Any, prompt: dict[str, Any]) -> int:
    """Tokens of a prompt after placeholder expansion: exact for text and audio, images counted at their most tiles
    (only the context budget uses it, which an over-estimate keeps safe)."""
    from processing_vita.feature_extraction_vita import get_audio_token_count, get_num_fbank_frames

    count = len(processor.tokenizer.encode(prompt["prompt"]))
    data = prompt.get("multi_modal_data", {})
    for samples, rate in data.get("audio", ()):
        frames = get_num_fbank_frames(int(round(len(samples) * SAMPLING_RATE / rate)))
        count += get_audio_token_count(frames) - 1
    images = processor.image_processor
    tiles = images.max_dynamic_patch + (1 if images.use_thumbnail and images.max_dynamic_patch > 1 else 0)
    count += len(data.get("image", ())) * (processor.image_seq_length * tiles - 1)
    return count


@dataclass
class VllmTurn:
    """One running turn: its request, stop switch, whether it was cancelled, and its task on the engine's loop."""

    turn_id: int
    request_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    reason: str = ""
    future: concurrent.futures.Future | None = None


class VllmTurnWorkers:
    """`TurnWorkers` (`duplex_turns.py`) on a vLLM engine: each `StartTurn` is one request (module docstring).

    Args:
        engine: a `VllmEngine` (shared), or a model folder for an engine of this session alone (closed by
            `stop_all`).
        processor: the `VitaProcessor` of the served folder (chat template, tokenizer).
        spellings, generation_kwargs, post: as for `TurnWorkers`.
        prompts: the session's `PromptCache`; only its context budget is used (bounded by the engine's context).
    """

    def __init__(
        self,
        engine: VllmEngine | str,
        processor: Any,
        spellings: StateSpellings,
        generation_kwargs: dict[str, Any],
        post: Callable[[InboxMessage], None],
        prompts: PromptCache | None = None,
    ) -> None:
        self._owns_engine = not isinstance(engine, VllmEngine)
        self.engine = VllmEngine(engine) if self._owns_engine else engine
        self.processor, self.spellings = processor, spellings
        self.generation_kwargs, self.post = dict(generation_kwargs), post
        sampling_params(self.generation_kwargs, [[0]], "check")  # unsupported arguments fail here, not per turn
        room = self.engine.max_model_len - int(self.generation_kwargs.get("max_new_tokens") or 64) - 8
        budget = prompts.budget if prompts is not None else None
        if budget is None:
            budget = ContextBudget(room)
            if prompts is not None:
                prompts.budget = budget
        budget.max_tokens = min(budget.max_tokens, room)
        self.budget = budget
        self.media_limits = self.engine.media_limits()
        self._prefix = f"vita-{uuid.uuid4().hex[:8]}"
        self.turns: dict[int, VllmTurn] = {}
        self.generated: dict[int, int] = {}  # turn id -> tokens streamed so far (tests and benchmarks read it)

    @property
    def running(self) -> bool:
        return bool(self.turns)

    def start(self, action: StartTurn) -> None:
        turn = VllmTurn(action.turn_id, f"{self._prefix}-turn-{action.turn_id}")
        self.turns[action.turn_id] = turn
        self.generated[action.turn_id] = 0
        turn.future = self.engine.submit(self._run(action, turn))

    def cancel(self, turn_id: int, reason: str = "interrupted") -> None:
        turn = self.turns.get(turn_id)
        if turn is not None:
            turn.cancelled, turn.reason = True, reason
            turn.stop.set()
            self.engine.abort_soon(turn.request_id)  # now, not at the next streamed token

    def finished(self, turn_id: int) -> None:
        self.turns.pop(turn_id, None)

    def stop_all(self) -> None:
        """Abort every turn and wait for its task; close the engine if it is this session's own."""
        for turn in list(self.turns.values()):
            turn.stop.set()
            self.engine.abort_soon(turn.request_id)
        for turn in list(self.turns.values()):
            if turn.future is not None:
                try:
                    turn.future.result(_STOP_TIMEOUT_SECONDS)
                except (Exception, concurrent.futures.CancelledError):
                    logger.debug("turn %d ended with an error while stopping", turn.turn_id, exc_info=True)
        self.turns.clear()
        if self._owns_engine:
            self.engine.close()

    # -- one turn, on the engine's loop ------------------------------------------------------------------------------

    def _prompt(self, action: StartTurn) -> dict[str, Any]:
        """The prompt within the context budget and the engine's media limits (`ContextBudget.fit`; a cut moves only
        forward, so prefixes stay stable for vLLM's prefix cache)."""
        return self.budget.fit(
            action,
            lambda messages: vllm_prompt(self.processor, messages),
            lambda prompt: estimated_prompt_tokens(self.processor, prompt),
            self._within_limits,
        )

    def _within_limits(self, prompt: dict[str, Any]) -> bool:
        media = prompt.get("multi_modal_data", {})
        return all(len(items) <= self.media_limits.get(kind, len(items)) for kind, items in media.items())

    def _event(self, event: Any) -> None:
        self.post(WorkerEvent(event))

    async def _run(self, action: StartTurn, turn: VllmTurn) -> None:
        turn_id = action.turn_id
        streamer = turn_streamer(action, self.processor.tokenizer, self.spellings, turn.stop, self._event)
        try:
            # Rendering (and the tokenizer pass of the budget) off the loop, which serves every session's requests.
            prompt = await asyncio.get_running_loop().run_in_executor(None, self._prompt, action)
            states = None if action.state is None else [action.state]
            params = sampling_params(
                self.generation_kwargs, opening_spellings(self.spellings, states), turn.request_id
            )

            def delivered(tokens: list[int]) -> bool:
                self.generated[turn_id] = self.generated.get(turn_id, 0) + len(tokens)
                return not turn.cancelled

            await stream_request(self.engine.engine, prompt, params, turn.request_id, streamer, turn.stop, delivered)
            if not turn.cancelled:
                self._event(ResponseDone(0.0, turn_id=turn_id))
        except Exception as error:
            logger.exception("duplex turn %d failed on vLLM", turn_id)
            self._event(Error(0.0, message=f"turn {turn_id} failed: {type(error).__name__}: {error}", turn_id=turn_id))
        except asyncio.CancelledError:  # the loop is shutting down: the session is closing
            raise
        except BaseException as error:  # KeyboardInterrupt, SystemExit: for the caller's thread (duplex_turns)
            logger.warning("duplex turn %d stopped by %s", turn_id, type(error).__name__)
            message = f"turn {turn_id} stopped by {type(error).__name__}: {error}"
            self.post(Raised(Error(0.0, message=message, turn_id=turn_id), error))
        finally:
            self.post(TurnFinished(turn_id))


async def stream_request(
    engine: Any,
    prompt: dict[str, Any],
    params: Any,
    request_id: str,
    streamer: VitaTurnStreamer,
    stop: threading.Event,
    delivered: Callable[[list[int]], bool] | None = None,
) -> None:
    """Generate `prompt` on an `AsyncLLM` and feed the streamed token ids to `streamer`, as `generate` feeds its
    streamer; once `stop` is set (noise decided, the turn cancelled) the request is aborted at its next output.
    `delivered(tokens)` is told of every output's tokens and says whether to pass them on (False: a cancelled turn)."""
    streamer.put(torch.empty(0, dtype=torch.long))  # the streamer skips its first put, the prompt's place
    if not stop.is_set():
        async for output in engine.generate(prompt, params, request_id):
            tokens = list(output.outputs[0].token_ids) if output.outputs else []
            if tokens and (delivered is None or delivered(tokens)):
                streamer.put(torch.tensor(tokens, dtype=torch.long))
            if stop.is_set() and not output.finished:
                await engine.abort(request_id)
    streamer.end()


__all__ = [
    "SUPPORTED_GENERATION_KWARGS",
    "VllmEngine",
    "VllmTurn",
    "VllmTurnWorkers",
    "estimated_prompt_tokens",
    "opening_spellings",
    "sampling_params",
    "start_engine",
    "stream_request",
    "video_frames",
    "vllm_prompt",
]
