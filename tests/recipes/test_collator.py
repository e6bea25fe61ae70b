"""Tests of recipes/collator.py: answer-only labels (state token and `</s>` included) and packing without
cross-sample attention."""

import datasets
import pytest
import torch

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.testing_utils import tiny_vita_config
from processing_vita.testing_utils import tiny_vita_processor
from recipes.collator import IGNORE_INDEX, VitaDataCollator, render_segments
from recipes.data import write_smoke_data


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    dataset, media = write_smoke_data(tmp_path_factory.mktemp("smoke"))
    return datasets.load_from_disk(dataset), media


@pytest.fixture(scope="module")
def processor():
    return tiny_vita_processor()


def _with_media(row, media):
    """The row as chat-template messages carrying their media paths."""
    queues = {k: [f"{media}/{p}" for p in row[k + "s"]] for k in ("image", "video", "audio")}
    messages = []
    for message in row["messages"]:
        content = []
        for block in message["content"]:
            if block["type"] == "text":
                content.append({"type": "text", "text": block["text"]})
            else:
                content.append({"type": block["type"], block["type"]: queues[block["type"]].pop(0)})
        messages.append({"role": message["role"], "content": content})
    return messages


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4, 5])
def test_collator_renders_the_processors_own_system_prompts(smoke, index):
    from processing_vita import VitaProcessor

    rows, media = smoke
    row = rows[index]
    base = tiny_vita_processor()
    prompts = {"lang": "Be brief.", "image": "Look at the image.", "video": "Watch the video."}
    processor = VitaProcessor(
        image_processor=base.image_processor,
        video_processor=base.video_processor,
        feature_extractor=base.feature_extractor,
        tokenizer=base.tokenizer,
        image_seq_length=base.image_seq_length,
        system_prompts=prompts,
    )
    sample = VitaDataCollator(processor, media_root=media).encode(row)
    rendered = processor.tokenizer.decode(sample["input_ids"], skip_special_tokens=False)
    modality = "video" if row["videos"] else "image" if row["images"] else "lang"
    assert rendered.startswith(f"<s>system:{prompts[modality]}</s>")
    if row["end_tag"]:
        full = "".join(text for text, _ in render_segments(row, system_prompts=prompts))
        assert full == processor.apply_chat_template(_with_media(row, media), tokenize=False)


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4, 5])
def test_labels_cover_exactly_the_answers(smoke, processor, index):
    rows, media = smoke
    row = rows[index]
    sample = VitaDataCollator(processor, media_root=media).encode(row)

    # The concatenated segments are the chat template's rendering, tokenized as one string.
    full = "".join(text for text, _ in render_segments(row))
    if row["end_tag"]:
        assert full == processor.apply_chat_template(_with_media(row, media), tokenize=False)
    media_kwargs = {
        "images": [f"{media}/{p}" for p in row["images"]] or None,
        "videos": [f"{media}/{p}" for p in row["videos"]] or None,
        "audio": [f"{media}/{p}" for p in row["audios"]] or None,
    }
    reference_ids = list(processor(text=full, padding=False, **media_kwargs)["input_ids"][0])
    assert sample["input_ids"].tolist() == reference_ids

    # Expected trained characters: from after each "\nbot:" to the end of its "</s>" (or the end, end_tag=False).
    expanded = processor.tokenizer.decode(reference_ids, skip_special_tokens=False)
    trained_chars = set()
    start = expanded.find("\nbot:")
    while start != -1:
        begin = start + len("\nbot:")
        close = expanded.find("</s>", begin)
        end = len(expanded) if close == -1 else close + len("</s>")
        trained_chars.update(range(begin, end))
        start = expanded.find("\nbot:", end)
    ids = reference_ids
    pieces = [processor.tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    expected, cursor = [], 0
    assert "".join(pieces) == expanded
    for token_id, piece in zip(ids, pieces):
        span = range(cursor, cursor + len(piece))
        expected.append(token_id if span and span[0] in trained_chars else IGNORE_INDEX)
        cursor += len(piece)
    assert sample["labels"].tolist() == expected

    answers = [m["content"][0]["text"] for m in row["messages"] if m["role"] == "assistant"]
    trained_text = processor.tokenizer.decode(sample["labels"][sample["labels"] != IGNORE_INDEX])
    eos = ["</s>"] * len(answers) if row["end_tag"] else ["</s>"] * (len(answers) - 1) + [""]
    assert trained_text == "".join(a + e for a, e in zip(answers, eos))
    assert trained_text[:3] in ("<1>", "<2>", "<3>")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_samples_do_not_attend_to_each_other(smoke, processor, attn):
    rows, media = smoke
    torch.manual_seed(0)
    model = VitaForConditionalGeneration(tiny_vita_config(attn_implementation=attn)).eval()
    batch_rows = [rows[i] for i in range(6)]
    packed = VitaDataCollator(processor, media_root=media, pack_to_length=4096)(batch_rows)
    # Five image/text/audio samples share one row; the video sample gets its own.
    assert packed["input_ids"].shape[0] == 2 and "attention_mask" not in packed
    assert (packed["position_ids"][0] == 0).sum() == 5
    single = VitaDataCollator(processor, media_root=media)
    with torch.no_grad():
        # Training runs without a cache (TRL passes use_cache=False); with one, transformers skips packed detection.
        packed_logits = model(**{k: v for k, v in packed.items() if k != "labels"}, use_cache=False).logits
        starts = {0: 0, 1: 0}
        for row in batch_rows:
            one = single([row])
            logits = model(**{k: v for k, v in one.items() if k != "labels"}).logits[0]
            r = 1 if row["videos"] else 0
            n = logits.shape[0]
            torch.testing.assert_close(packed_logits[r, starts[r] : starts[r] + n], logits, atol=1e-4, rtol=1e-4)
            starts[r] += n
