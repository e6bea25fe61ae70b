"""Tests of recipes/vita_tiny/data.py: a `--small` build of the vita-tiny synthetic data, checked against its own
ground truth (pixel colours and shapes of the images, motion of the videos, speech in the clips), the state-token
rule, the disjointness of the held-out voices, phrasings and background sentences, and determinism."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from datasets import load_from_disk

from recipes.evaluate import DEFAULT_ASR_PATTERN
from recipes.vita_tiny.data import SPLITS, build_vita_tiny_data, main
from recipes.vita_tiny.phrasings import (
    HELDOUT_PHRASINGS_PER_KIND,
    IMAGE_QUESTIONS,
    QUESTION_FRAMES,
    TERSE_IMAGE_QUESTIONS,
    VIDEO_QUESTIONS,
    background_sentences,
)
from recipes.vita_tiny.world import COLOURS, NUMBERS
from tests.utils import requires_espeak_and_piper

pytestmark = requires_espeak_and_piper


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("vita_tiny")
    manifest = build_vita_tiny_data(root, seed=0, small=True)
    rows = {split: [dict(r) for r in load_from_disk(str(root / split))] for split in SPLITS}
    return root, manifest, rows


def _all_rows(rows):
    return [row for split_rows in rows.values() for row in split_rows]


def _answer(row):
    return row["messages"][-1]["content"][0]["text"]


def _user_types(row):
    return [b["type"] for b in row["messages"][0]["content"]]


def test_splits_manifest_and_corpus(built):
    root, manifest, rows = built
    for split in SPLITS:
        assert len(rows[split]) == manifest["sizes"][split] > 0
        assert sum(manifest["tasks"][split].values()) == len(rows[split])
    assert set(manifest["tasks"]["sft_train"]) >= {"image_qa", "video_qa", "background", "text_qa"}
    assert {"image_qa", "video_qa", "background", "asr"} <= set(manifest["tasks"]["heldout"])
    corpus = (root / "corpus.txt").read_text(encoding="utf-8").splitlines()
    assert any(not line.isascii() for line in corpus) and any(line.isascii() for line in corpus)
    from processing_vita.tokenization_vita import train_extension_tokenizer

    pieces = train_extension_tokenizer(corpus, vocab_size=300, min_frequency=1)
    assert pieces and all(not p.isascii() for p in pieces)


def test_media_files_exist_and_match_blocks(built):
    root, manifest, rows = built
    media = Path(manifest["media_root"])
    for row in _all_rows(rows):
        types = [b["type"] for m in row["messages"] for b in m["content"]]
        for kind, key in (("image", "images"), ("video", "videos"), ("audio", "audios")):
            assert types.count(kind) == len(row[key]), row["id"]
            for path in row[key]:
                assert (media / path).is_file(), (row["id"], path)


def test_state_tokens_follow_the_rule(built):
    _, _, rows = built
    seen = set()
    for row in _all_rows(rows):
        answer = _answer(row)
        if row["task"] == "background":
            assert answer == "<2>" and "audio" in _user_types(row), row["id"]
        elif "audio" in _user_types(row):
            assert answer.startswith("<1>") and len(answer) > 3, row["id"]
        else:
            assert answer.startswith("<3>") and len(answer) > 3, row["id"]
        seen.add(answer[:3])
        assert row["end_tag"] is True
    assert seen == {"<1>", "<2>", "<3>"}


def test_previous_heldout_split_keeps_its_voices_and_plain_questions(built):
    """`heldout_previous` rebuilds the split the checkpoint before the voices work was measured on: its voices, its
    held-out question templates asked plainly, its statements."""
    _, manifest, rows = built
    previous = rows["heldout_previous"]
    assert previous and {r["voice"] for r in previous} - {""} <= set(manifest["voices"]["previous"])
    for row in previous:
        meta = json.loads(row["meta"])
        if row["task"] == "image_spoken_qa":
            assert (
                meta["style"] == "plain" and row["phrasing"] in IMAGE_QUESTIONS[_image_question_kind(row["phrasing"])]
            )
        if row["task"] == "background":
            assert meta["kind"] == "statement" and meta["text"] in background_sentences()


def test_heldout_question_phrasings_are_new_pairs_of_known_frames_and_phrases():
    def split(question):
        for frame in QUESTION_FRAMES:
            head, tail = frame.split("{x}")
            if question.startswith(head) and question.endswith(tail):
                return frame, question[len(head) : len(question) - len(tail)]
        return None

    for questions in (IMAGE_QUESTIONS, VIDEO_QUESTIONS):
        training = {q for qs in questions.values() for q in qs[:-HELDOUT_PHRASINGS_PER_KIND]}
        for qs in questions.values():
            for question in qs[-HELDOUT_PHRASINGS_PER_KIND:]:
                assert question not in training
                frame, phrase = split(question)
                # The frame is known from other kinds, the phrase from other frames of this kind.
                assert any(split(q) and split(q)[0] == frame for q in training)
                assert any(split(q) == (f, phrase) for q in qs[:-HELDOUT_PHRASINGS_PER_KIND] for f in QUESTION_FRAMES)


def test_heldout_voices_phrasings_and_sentences_are_unseen(built):
    _, manifest, rows = built
    train = [r for s in SPLITS if not s.startswith("heldout") for r in rows[s]]
    heldout = rows["heldout"]
    train_voices = {r["voice"] for r in train} - {""}
    heldout_voices = {r["voice"] for r in heldout} - {""}
    assert heldout_voices and train_voices and not heldout_voices & train_voices
    assert heldout_voices <= set(manifest["voices"]["heldout"])
    train_speeds = {v.split("@")[0]: set() for v in train_voices}
    for v in train_voices:
        train_speeds[v.split("@")[0]].add(v.split("@")[1])
    for v in heldout_voices:  # a held-out voice is new, or a known voice at a new speed
        assert v.split("@")[1] not in train_speeds.get(v.split("@")[0], set())
    train_phrasings = {r["phrasing"] for r in train} - {""}
    heldout_phrasings = {r["phrasing"] for r in heldout} - {""}
    assert heldout_phrasings and not heldout_phrasings & train_phrasings
    # Typed questions too: no held-out question text appears verbatim in training.
    typed = {b["text"] for r in train for b in r["messages"][0]["content"] if b["type"] == "text"}
    for row in heldout:
        for block in row["messages"][0]["content"]:
            if block["type"] == "text" and row["task"] in ("image_qa", "video_qa"):
                assert block["text"] not in typed
    train_talk = {json.loads(r["meta"])["text"] for r in train if r["task"] == "background"}
    heldout_talk = {json.loads(r["meta"])["text"] for r in heldout if r["task"] == "background"}
    assert heldout_talk and not heldout_talk & train_talk


def _components(mask):
    """4-connected components of a boolean mask, as lists of (y, x)."""
    seen = np.zeros_like(mask)
    out = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, pixels = [(y, x)], []
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            pixels.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        out.append(np.array(pixels))
    return out


def _classify(pixels):
    ys, xs = pixels[:, 0], pixels[:, 1]
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = len(pixels) / (h * w)
    if fill > 0.92:
        return "square"
    if fill > 0.68:
        return "circle"
    bottom_width = np.sum(ys == ys.max())
    return "triangle" if bottom_width > 0.6 * w else "diamond"


def _image_question_kind(question):
    questions = [*IMAGE_QUESTIONS.items(), *TERSE_IMAGE_QUESTIONS.items()]
    return next(kind for kind, templates in questions if question in templates)


def test_images_show_the_claimed_shapes(built):
    from PIL import Image

    _, manifest, rows = built
    media = Path(manifest["media_root"])
    checked = 0
    for row in _all_rows(rows):
        for path in row["images"]:
            meta = json.loads(row["meta"])
            pixels = np.asarray(Image.open(media / path).convert("RGB")).astype(int)
            assert pixels.shape == (56, 56, 3)
            coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 0
            assert np.all(pixels[coloured] == COLOURS[meta["colour"]]), row["id"]
            parts = _components(coloured)
            assert len(parts) == meta["count"], row["id"]
            assert {_classify(p) for p in parts} == {meta["shape"]}, row["id"]
            if meta["count"] == 1:
                cy, cx = parts[0].mean(axis=0)
                side = {"left": cx < 22, "right": cx > 34, "top": cy < 22, "bottom": cy > 34}
                assert side[meta["position"]], (row["id"], meta, cx, cy)
            if row["task"] in ("image_qa", "image_spoken_qa"):
                kind = _image_question_kind(row["phrasing"])
                expected = NUMBERS[meta["count"]] if kind == "count" else meta[kind]
                assert _answer(row)[3:] == expected, row["id"]
            checked += 1
    assert checked >= 10


def test_videos_decode_and_move_the_claimed_way(built):
    import av

    _, manifest, rows = built
    media = Path(manifest["media_root"])
    checked = 0
    palette = np.array(list(COLOURS.values()))
    for row in _all_rows(rows):
        for path in row["videos"]:
            meta = json.loads(row["meta"])
            with av.open(str(media / path)) as container:
                frames = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
            assert len(frames) == 8 and frames[0].shape == (56, 56, 3)
            centres = []
            for frame in frames:
                mask = (frame.max(axis=2) - frame.min(axis=2)) > 60
                assert mask.sum() > 20, row["id"]
                centres.append(np.argwhere(mask).mean(axis=0))
            dy, dx = centres[-1] - centres[0]
            moved = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
            assert moved == meta["direction"] and max(abs(dx), abs(dy)) > 20, (row["id"], dx, dy)
            middle = frames[4][(frames[4].max(axis=2) - frames[4].min(axis=2)) > 60]
            nearest = np.argmin(((palette - np.median(middle, axis=0)) ** 2).sum(axis=1))
            assert list(COLOURS)[nearest] == meta["colour"], row["id"]
            if row["task"] == "video_qa":
                kind = next(k for k, ts in VIDEO_QUESTIONS.items() if row["phrasing"] in ts)
                assert _answer(row) == "<3>" + meta[kind]
            checked += 1
    assert checked >= 4


def test_audio_clips_are_speech(built):
    _, manifest, rows = built
    media = Path(manifest["media_root"])
    clips = {p for row in _all_rows(rows) for p in row["audios"]}
    assert len(clips) >= 10
    for path in clips:
        samples, rate = soundfile.read(str(media / path), dtype="float32")
        assert samples.ndim == 1 and samples.size / rate > 0.3, path
        # Training clips go through level changes down to -18 dB (a far microphone): quiet, never silent.
        assert float(np.sqrt(np.mean(samples**2))) > 0.002, path
        # Speech is bursty: its loudest 50 ms windows stand well above its quietest (a plain noise clip would not).
        window = rate // 20
        energy = np.sqrt(np.mean(samples[: samples.size // window * window].reshape(-1, window) ** 2, axis=1))
        assert np.percentile(energy, 90) > 1.5 * np.percentile(energy, 10), path
    voices = {r["voice"].split(":")[0] for r in _all_rows(rows) if r["voice"]}
    assert voices == {"piper", "espeak"}


def test_asr_rows_transcribe_their_clip(built):
    _, manifest, rows = built
    asr = [r for r in _all_rows(rows) if r["task"] == "asr"]
    assert asr
    for row in asr:
        assert _user_types(row) == ["audio", "text"]
        assert re.search(DEFAULT_ASR_PATTERN, row["phrasing"].lower()), row["phrasing"]  # what evaluate.py scores
        assert _answer(row) == "<1>" + json.loads(row["meta"])["text"]
    # Held-out transcription is held-out background talk only (statements, never a question).
    for row in rows["heldout"]:
        if row["task"] == "asr":
            text = json.loads(row["meta"])["text"]
            assert text in manifest["speech_texts"]["heldout"] and text.endswith("."), text


def test_llm_rows_teach_the_words_of_captions_and_transcripts_but_no_heldout_text(built):
    """Stage 1 text covers what the frozen-LLM alignment stages must say: every caption word and every training
    transcript word appears in some llm_train answer; no held-out sentence does."""
    _, manifest, rows = built
    llm = rows["llm_train"]
    assert {row["task"] for row in llm} <= {"text_qa", "say"}
    say = [row for row in llm if row["task"] == "say"]
    assert say and all(not row["images"] and not row["videos"] and not row["audios"] for row in llm)
    for row in say:
        spoken = _answer(row)
        assert spoken.startswith("<3>") and spoken[3:] in row["messages"][0]["content"][0]["text"]
        assert spoken[3:] not in manifest["speech_texts"]["heldout"]
    taught = {w for row in llm for w in _answer(row)[3:].lower().strip(".?").split()}
    caption_words = {w for row in rows["vision_train"] for w in _answer(row)[3:].split()}
    # The small build has few llm rows; most caption words must already be covered.
    assert len(caption_words & taught) >= 0.5 * len(caption_words)


def test_deterministic_given_seed(tmp_path):
    sizes = {
        "llm_train": 6,
        "vision_train": 4,
        "audio_train": 3,
        "sft_train": 8,
        "heldout": 8,
        "background_sentences": 24,
    }
    manifest = build_vita_tiny_data(tmp_path / "a", seed=3, sizes=sizes, tts_engines=("espeak",), small=True)
    # Held-out transcription (held-out statements) needs no word that training never spoke.
    train_words = {w for text in manifest["speech_texts"]["train"] for w in text.lower().strip(".?").split()}
    statements = set(manifest["speech_texts"]["heldout"]) & set(background_sentences())
    assert statements
    for text in statements:
        if not text.endswith("?"):
            assert set(text.lower().strip(".").split()) <= train_words, text
    args = [str(tmp_path / "b"), "--small", "--seed", "3", "--tts", "espeak"]
    main(args + [f"--size={k}={v}" for k, v in sizes.items()])
    for split in SPLITS:
        a = [dict(r) for r in load_from_disk(str(tmp_path / "a" / split))]
        b = [dict(r) for r in load_from_disk(str(tmp_path / "b" / split))]
        assert a == b
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "media").rglob("*.*"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "media").rglob("*.*"))
    assert files_a == files_b
    for rel in files_a:
        if rel.suffix in (".png", ".wav"):
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sizes": {"sft": 3}}, "Unknown sizes"),
        ({"sizes": {"sft_train": -1}}, "Bad sizes"),
        ({"sizes": {"voices_per_text": 0}}, "Bad sizes"),
        ({"tts_engines": ("sapi",)}, "Unknown tts_engines"),
        ({"tts_engines": ("festival",)}, "leaves no voice"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_vita_tiny_data(tmp_path, small=True, **kwargs)


def test_rows_encode_with_the_collator(built):
    """Every task renders through the training collator: one 56 px tile per image, labels on the answer only."""
    from processing_vita.testing_utils import tiny_vita_processor
    from recipes.collator import IGNORE_INDEX, VitaDataCollator

    _, manifest, rows = built
    collator = VitaDataCollator(tiny_vita_processor(), media_root=manifest["media_root"])
    by_task = {}
    for row in _all_rows(rows):
        by_task.setdefault(row["task"], row)
    assert set(by_task) >= {"text_qa", "caption", "asr", "image_qa", "image_spoken_qa", "video_qa", "background"}
    for task, row in by_task.items():
        sample = collator.encode(row)
        assert (sample["labels"] != IGNORE_INDEX).sum() >= 2, task
        if row["images"]:
            assert sample["pixel_values"].shape[-2:] == (56, 56) and sample["image_num_patches"].tolist() == [1]
        assert ("input_features" in sample) == bool(row["audios"]), task


def test_training_clips_are_augmented_and_keep_their_clean_version(built):
    """Training speech goes through rooms, microphones, codecs and noise; its clean version sits beside it for the
    encoder's CTC pretraining (same length, different samples). Held-out clips have none."""
    root, manifest, _ = built
    index = json.loads((root / "speech_index.json").read_text())
    media = Path(manifest["media_root"])
    assert all("clean" not in clip for clip in index["heldout"])
    changed = 0
    for clip in index["train"]:
        noisy, rate = soundfile.read(str(media / clip["audio"]), dtype="float32")
        clean, clean_rate = soundfile.read(str(media / clip["clean"]), dtype="float32")
        assert rate == clean_rate == 16_000 and len(noisy) == len(clean), clip["audio"]
        changed += not np.allclose(noisy, clean, atol=1e-3)
    assert changed >= 0.5 * len(index["train"])
