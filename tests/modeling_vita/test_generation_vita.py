"""Tests of the state-token logits processor, the interrupt stopping criteria and the turn streamer.

Tiny causal LMs (Llama, Mixtral) and a character-level tokenizer are built in code; nothing is downloaded.
"""

import threading
import time

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    MixtralConfig,
    MixtralForCausalLM,
    PreTrainedTokenizerFast,
    StoppingCriteriaList,
)

from modeling_vita.generation_vita import (
    InterruptStoppingCriteria,
    StateTokenLogitsProcessor,
    VitaTurnStreamer,
    run_turn,
    state_token_sequences,
)
from processing_vita import VitaState, parse_state


def make_tokenizer(special_state_tokens: bool = False) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: "<1>" is three tokens unless registered as a special token."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789<>:?!., ")
    vocab = {token: index for index, token in enumerate(["<pad>", "<s>", "</s>", "<unk>", *chars])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if special_state_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<1>", "<2>", "<3>"]})
    return tokenizer


def make_model(kind: str, vocab_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if kind == "mixtral":
        model = MixtralForCausalLM(MixtralConfig(num_local_experts=2, num_experts_per_tok=1, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    return model.eval()


@pytest.mark.parametrize("special_state_tokens", [False, True], ids=["literal_pieces", "special_tokens"])
@pytest.mark.parametrize("kind", ["llama", "mixtral"])
def test_logits_processor_forces_a_state_token_first(kind, special_state_tokens):
    tokenizer = make_tokenizer(special_state_tokens)
    spellings = state_token_sequences(tokenizer)
    assert list(spellings) == list(VitaState)
    assert all(len(s) == (1 if special_state_tokens else 3) for s in spellings.values())
    model = make_model(kind, len(tokenizer))
    tokenizer.padding_side = "left"
    inputs = tokenizer(["user:hi</s>\nbot:", "user:what is this?</s>\nbot:"], return_tensors="pt", padding=True)
    # any state token, or only the typed-query one
    for allowed in (list(spellings.values()), [spellings[VitaState.QUERY_TEXT]]):
        processor = StateTokenLogitsProcessor(allowed)
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=6,
                do_sample=False,
                logits_processor=LogitsProcessorList([processor]),
                pad_token_id=0,
            )
        for row in out[:, inputs["input_ids"].shape[1] :]:
            text = tokenizer.decode(row, skip_special_tokens=False)
            state, _ = parse_state(text)
            assert state is not None, text
            if len(allowed) == 1:
                assert state is VitaState.QUERY_TEXT, text


def test_logits_processor_leaves_rows_free_after_the_state_token():
    processor = StateTokenLogitsProcessor([[5, 6, 7], [5, 8, 7]], prompt_length=2)
    scores = torch.zeros(2, 10)
    masked = processor(torch.tensor([[1, 1, 5], [1, 1, 5]]), scores)  # step 1: after "<"
    assert torch.isfinite(masked[0]).nonzero().flatten().tolist() == [6, 8]
    free = processor(torch.tensor([[1, 1, 5, 6, 7], [1, 1, 5, 8, 7]])[:, :5], scores)  # step 3: done
    assert torch.isfinite(free).all()


def test_state_token_spellings_follow_the_configured_tokens():
    tokenizer = make_tokenizer()
    spellings = state_token_sequences(tokenizer, {"query_audio": "a", "noisy_audio": "b:", "query_text": "c"})
    assert [len(spelling) for spelling in spellings.values()] == [1, 2, 1]
    with pytest.raises(ValueError, match="expected none to be a prefix"):
        state_token_sequences(tokenizer, {"query_audio": "a", "noisy_audio": "ab", "query_text": "c"})


@pytest.mark.parametrize("special_state_tokens", [False, True], ids=["literal_pieces", "special_tokens"])
def test_turn_streamer_decides_the_state_and_streams_the_answer(special_state_tokens):
    tokenizer = make_tokenizer(special_state_tokens)
    spellings = state_token_sequences(tokenizer)
    states, deltas = [], []
    streamer = VitaTurnStreamer(tokenizer, spellings, on_state=states.append, on_text=deltas.append)
    streamer.put(torch.tensor([[1, 4, 5]]))  # the prompt is skipped
    for token in [*spellings[VitaState.QUERY_AUDIO], *tokenizer.encode(" hi there", add_special_tokens=False)]:
        assert not states or states == [VitaState.QUERY_AUDIO]
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert states == [VitaState.QUERY_AUDIO] and streamer.state is VitaState.QUERY_AUDIO
    assert "".join(deltas) == streamer.text == "hi there"  # the separator space after the state token is dropped
    assert not streamer.stop.is_set()


def test_turn_streamer_stops_a_noisy_turn_at_its_state_token():
    tokenizer = make_tokenizer()
    spellings = state_token_sequences(tokenizer)
    deltas = []
    streamer = VitaTurnStreamer(tokenizer, spellings, on_text=deltas.append)
    streamer.put(torch.tensor([[1, 4]]))
    for token in spellings[VitaState.NOISY_AUDIO][:-1]:
        streamer.put(torch.tensor([token]))
        assert not streamer.stop.is_set() and streamer.state is None
    streamer.put(torch.tensor([spellings[VitaState.NOISY_AUDIO][-1]]))
    assert streamer.stop.is_set() and streamer.state is VitaState.NOISY_AUDIO
    streamer.put(torch.tensor(tokenizer.encode("x", add_special_tokens=False)))
    streamer.end()
    assert deltas == [] and streamer.text == ""


@pytest.mark.parametrize("kind", ["llama", "mixtral"])
def test_run_turn_gives_the_forced_state_and_the_tokens_of_plain_generate(kind):
    tokenizer = make_tokenizer()
    spellings = state_token_sequences(tokenizer)
    model = make_model(kind, len(tokenizer))
    inputs = tokenizer(["user:hi</s>\nbot:"], return_tensors="pt")
    streamer = VitaTurnStreamer(tokenizer, spellings)
    out = run_turn(model, dict(inputs), streamer, [VitaState.QUERY_TEXT], {"max_new_tokens": 8, "do_sample": False})
    prompt_length = inputs["input_ids"].shape[1]
    assert streamer.state is VitaState.QUERY_TEXT
    reference = model.generate(
        **inputs,
        max_new_tokens=8,
        do_sample=False,
        logits_processor=LogitsProcessorList([StateTokenLogitsProcessor([spellings[VitaState.QUERY_TEXT]])]),
    )
    assert out.tolist() == reference.tolist()
    answer = out[0, prompt_length + len(spellings[VitaState.QUERY_TEXT]) :]
    assert streamer.text == tokenizer.decode(answer, skip_special_tokens=True).removeprefix(" ")


class _StepCounter(LogitsProcessor):
    """Counts decoding steps; signals once `after` steps ran."""

    def __init__(self, after: int) -> None:
        self.steps = 0
        self.after = after
        self.reached = threading.Event()
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.steps += 1
        self.times.append(time.perf_counter())
        if self.steps >= self.after:
            self.reached.set()
        return scores


def test_interrupt_stops_running_generate_within_one_step():
    tokenizer = make_tokenizer()
    model = make_model("llama", len(tokenizer))
    inputs = tokenizer(["user:tell me a long story</s>\nbot:"], return_tensors="pt")
    interrupt = threading.Event()
    counter = _StepCounter(after=5)
    result = {}

    def worker():
        with torch.no_grad():
            result["out"] = model.generate(
                **inputs,
                max_new_tokens=1000,
                min_new_tokens=1000,  # never stops on EOS: only the interrupt can end it early
                do_sample=False,
                logits_processor=LogitsProcessorList([counter]),
                stopping_criteria=StoppingCriteriaList([InterruptStoppingCriteria(interrupt)]),
                pad_token_id=0,
            )

    thread = threading.Thread(target=worker)
    thread.start()
    assert counter.reached.wait(timeout=20)
    steps_before = counter.steps  # read before setting: the step in flight may still count, nothing after it
    set_at = time.perf_counter()
    interrupt.set()
    thread.join(timeout=20)
    assert not thread.is_alive()
    stopped_at = time.perf_counter()
    generated = result["out"].shape[1] - inputs["input_ids"].shape[1]
    steps_after = counter.steps - steps_before
    step_ms = 1000 * (counter.times[-1] - counter.times[0]) / max(1, len(counter.times) - 1)
    print(
        f"\ninterrupt: {steps_after} step(s) after the event, {1000 * (stopped_at - set_at):.2f} ms; "
        f"step {step_ms:.2f} ms"
    )
    assert steps_after <= 1
    assert generated == counter.steps < 1000


def test_interrupt_criteria_returns_one_bool_per_row():
    event = threading.Event()
    criteria = InterruptStoppingCriteria(event)
    ids = torch.zeros(3, 4, dtype=torch.long)
    assert criteria(ids, None).tolist() == [False] * 3
    event.set()
    result = criteria(ids, None)
    assert result.dtype == torch.bool and result.shape == (3,) and result.all()
