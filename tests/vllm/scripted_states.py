"""A test-only vLLM logits processor that scripts the tiny random model's decision and records every decoding step.

It runs inside vLLM's engine-core process, so it is configured through the environment (read when the engine
builds it; the engine process inherits the test's environment): `VITA_TEST_SCRIPT` is a JSON object with
- `audio_token_id`, `noise_below`: a request whose last run of audio tokens is shorter than `noise_below` (a short
  sound) is pushed towards the `noise` spelling, any other towards `query` (a big bonus on that spelling's token at
  each of its steps; the real state constraint, `vllm_vita.state_logits`, still decides what is allowed);
- `step_delay`: seconds slept per decoding step of a scripted request (answers long enough to interrupt);
- `steps_file`: every step of a request is appended there as `request_id step time` (the request id comes from the
  backend's `extra_args`), so a test can see when the engine stops working on an aborted request.
Requests without the duplex backend's `extra_args` are not touched.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

logger = logging.getLogger(__name__)

BONUS = 1e4


def _last_run(ids: list[int], token_id: int) -> int:
    length = 0
    for token in reversed(ids):
        if token == token_id:
            length += 1
        elif length:
            break
    return length


class ScriptedStates(AdapterLogitsProcessor):
    """Noise for a short last audio clip, a query otherwise; every step logged (module docstring)."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        super().__init__(vllm_config, device, is_pin_memory)
        self.script = json.loads(os.environ.get("VITA_TEST_SCRIPT", "{}"))

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params: SamplingParams) -> Callable | None:
        request_id = (params.extra_args or {}).get("vita_request_id")
        if not self.script or request_id is None:
            return None
        script = self.script

        def scripted(prompt_ids: list[int], output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            step = len(output_ids)
            if script.get("steps_file"):
                with open(script["steps_file"], "a") as sink:
                    sink.write(f"{request_id} {step} {time.monotonic():.4f}\n")
            time.sleep(float(script.get("step_delay", 0.0)))
            noisy = _last_run(prompt_ids, int(script["audio_token_id"])) < int(script["noise_below"])
            spelling = script["noise" if noisy else "query"]
            if step < len(spelling):
                logits = logits.clone()
                logits[spelling[step]] += BONUS
            return logits

        return scripted


__all__ = ["ScriptedStates"]
