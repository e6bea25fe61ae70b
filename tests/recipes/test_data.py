"""Tests of recipes/data.py: the original JSON -> converted rows, the state-token rule, missing media, the CLI."""

import json

import pytest

from recipes.data import convert_record, convert_records, main


def _item(**kwargs):
    item = {
        "id": "x",
        "conversations": [
            {"from": "human", "value": "<image>\n<audio>\n"},
            {"from": "gpt", "value": "A"},
            {"from": "human", "value": "text question"},
            {"from": "gpt", "value": "B"},
            {"from": "human", "value": "<audio>\n"},
            {"from": "gpt", "value": ""},
        ],
        "image": "a.png",
        "audio": ["q.wav", "noise.wav"],
    }
    item.update(kwargs)
    return item


def test_state_tokens_follow_the_original_rule():
    row = convert_record(_item(inserted_id=5, end_tag=False))
    answers = [m["content"][0]["text"] for m in row["messages"] if m["role"] == "assistant"]
    assert answers == ["<1>A", "<3>B", "<2>"]
    assert row["end_tag"] is False
    first_user = row["messages"][0]["content"]
    assert [b["type"] for b in first_user] == ["image", "audio"]
    assert row["images"] == ["a.png"] and row["audios"] == ["q.wav", "noise.wav"]


def test_bad_inserted_id_and_placeholder_count_raise():
    with pytest.raises(ValueError, match="inserted_id"):
        convert_record(_item(inserted_id=0))
    with pytest.raises(ValueError, match="2 <audio> placeholders but 1 audio"):
        convert_record(_item(audio="q.wav"))


def test_missing_media_are_listed(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "q.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"1 referenced media files do not exist(.|\n)*noise\.wav"):
        convert_records([_item()], tmp_path)
    assert convert_records([_item()], tmp_path, skip_missing=True) == []


def test_convert_cli_writes_a_dataset(tmp_path, capsys):
    import datasets

    for name in ("a.png", "q.wav", "noise.wav"):
        (tmp_path / name).write_bytes(b"")
    source = tmp_path / "vita.json"
    source.write_text(json.dumps([_item(inserted_id=5)]))
    main(["convert", str(source), str(tmp_path / "out"), "--media-root", str(tmp_path)])
    dataset = datasets.load_from_disk(str(tmp_path / "out"))
    assert dataset[0]["messages"][-1]["content"][0]["text"] == "<2>"
    assert "wrote 1 rows" in capsys.readouterr().out


def test_stats_of_the_smoke_data(tmp_path):
    import datasets

    from processing_vita.testing_utils import tiny_vita_tokenizer
    from recipes.data import dataset_stats, write_smoke_data

    dataset, media = write_smoke_data(tmp_path, with_video=False)
    stats = dataset_stats(datasets.load_from_disk(dataset), media, tiny_vita_tokenizer())
    assert stats["rows"] == 5 and stats["mix"] == {"image": 1, "audio": 2, "image+audio": 1, "text": 1}
    assert stats["states"] == {"<3>": 3, "<1>": 2, "<2>": 1}
    assert sorted(stats["audio_seconds"]) == [0.6, 0.8, 1.0] and len(stats["text_tokens"]) == 5
