"""Tests of the state-token logits processor, the interrupt stopping criteria and `parse_state`.

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
    parse_state,
    state_token_sequences,
)


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
    assert all(len(s) == (1 if special_state_tokens else 3) for s in spellings)
    model = make_model(kind, len(tokenizer))
    tokenizer.padding_side = "left"
    inputs = tokenizer(["user:hi</s>\nbot:", "user:what is this?</s>\nbot:"], return_tensors="pt", padding=True)
    for allowed in (spellings, spellings[2:]):  # any state token, or only <3> (a typed query)
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
                assert state == "query_text", text
            ids_state, rest = parse_state(
                row, {"query_audio": [spellings[0]], "noisy_audio": [spellings[1]], "query_text": [spellings[2]]}
            )
            assert ids_state == state
            assert len(rest) == len(row) - len(spellings[0])


def test_logits_processor_leaves_rows_free_after_the_state_token():
    processor = StateTokenLogitsProcessor([[5, 6, 7], [5, 8, 7]], prompt_length=2)
    scores = torch.zeros(2, 10)
    masked = processor(torch.tensor([[1, 1, 5], [1, 1, 5]]), scores)  # step 1: after "<"
    assert torch.isfinite(masked[0]).nonzero().flatten().tolist() == [6, 8]
    free = processor(torch.tensor([[1, 1, 5, 6, 7], [1, 1, 5, 8, 7]])[:, :5], scores)  # step 3: done
    assert torch.isfinite(free).all()


def test_parse_state_reads_text_and_ids():
    assert parse_state("<1> The answer.") == ("query_audio", "The answer.")
    assert parse_state(" <2>") == ("noisy_audio", "")
    assert parse_state("<3>hello") == ("query_text", "hello")
    assert parse_state("hello <1>") == (None, "hello <1>")
    assert parse_state([9, 10, 4], {"query_audio": 9, "noisy_audio": 10}) == ("query_audio", [10, 4])
    assert parse_state(torch.tensor([5, 6, 7, 4]), {"noisy_audio": [5, 6, 7]}) == ("noisy_audio", [4])
    assert parse_state([4], {"noisy_audio": [5, 6, 7]}) == (None, [4])
    with pytest.raises(ValueError, match="found 'yes'"):
        parse_state([1], {"yes": [1]})


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
