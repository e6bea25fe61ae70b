"""Tests of the Full-Duplex-Bench-style evaluation: FDB's metrics on hand-made output tracks and word timings with
known answers, the spoken words and events an evaluation writes, and the generator writing a valid sample folder."""

import json

import numpy as np
import pytest
import soundfile

from modeling_vita.duplex_events import AnswerDucked, AnswerResumed, AudioOut, Interrupted, StateDecided
from recipes.duplex_bench.evaluate import event_record, spoken_words, task_of
from recipes.duplex_bench.metrics import (
    ANY_WORD,
    FDB_RULE,
    PUBLISHED,
    format_table,
    loud_intervals,
    overlap_outcome,
    pause_handling,
    smooth_turn_taking,
    spread_words,
    stop_latency,
    summarize,
    took_turn,
    user_interruption,
)
from tests.utils import requires_espeak

RATE = 16_000


def words(*spans):
    return [{"text": f"w{i}", "timestamp": [a, b]} for i, (a, b) in enumerate(spans)]


def track_with(*spans, secs=6.0, amplitude=0.3):
    """A track holding a 200 Hz tone over each (start, end[, gain]) span."""
    track = np.zeros(int(secs * RATE), dtype=np.float32)
    for span in spans:
        start, end, gain = (*span, 1.0) if len(span) == 2 else span
        t = np.arange(int(start * RATE), int(end * RATE))
        track[t] = gain * amplitude * np.sin(2 * np.pi * 200 * t / RATE)
    return track


def test_took_turn_follows_fdb_unless_any_word_counts():
    one_short_word = words((1.0, 1.3))
    assert not took_turn([], ANY_WORD) and not took_turn(one_short_word, FDB_RULE)
    assert took_turn(one_short_word, ANY_WORD)
    assert took_turn(words((1.0, 1.2), (1.8, 2.1)), FDB_RULE)  # lasts 1.1 s
    assert took_turn(words((1.0, 1.1), (1.1, 1.2), (1.2, 1.3), (1.3, 1.4)), FDB_RULE)  # four words
    assert not took_turn(words((1.0, 1.1), (1.1, 1.2), (1.2, 1.3)), FDB_RULE)  # a backchannel


def test_pause_handling_counts_only_speech_while_the_user_still_has_the_turn():
    pause, speech_end = (1.5, 2.3), 3.4
    speaks_in_the_pause = words((1.9, 2.2), (2.2, 2.6), (2.6, 3.0), (3.0, 3.2))
    assert pause_handling(speaks_in_the_pause, *pause[:1], speech_end, FDB_RULE) == 1
    answers_after_the_end = words((3.8, 4.2), (4.2, 4.6), (4.6, 5.2))
    assert pause_handling(answers_after_the_end, pause[0], speech_end, ANY_WORD) == 0
    assert pause_handling([], pause[0], speech_end, ANY_WORD) == 0


def test_smooth_turn_taking_latency_from_the_end_of_the_turn():
    tor, latency = smooth_turn_taking(words((2.4, 2.9), (2.9, 3.5)), user_end=2.0, rule=FDB_RULE)
    assert tor == 1 and latency == pytest.approx(0.4)
    assert smooth_turn_taking(words((1.8, 2.9)), 2.0, ANY_WORD) == (1, 0.0)  # an early start counts as 0
    assert smooth_turn_taking([], 2.0, ANY_WORD) == (0, None)
    assert smooth_turn_taking(words((2.3, 2.6)), 2.0, FDB_RULE) == (0, None)  # one short word: no turn for FDB


def test_user_interruption_scores_the_words_after_the_interruption():
    old_answer, new_answer = words((2.0, 2.5), (2.5, 3.0)), words((5.6, 6.0), (6.0, 6.8))
    tor, latency = user_interruption(old_answer + new_answer, interrupt_end=5.0, rule=FDB_RULE)
    assert tor == 1 and latency == pytest.approx(0.6)
    assert user_interruption(old_answer, interrupt_end=5.0, rule=ANY_WORD) == (0, None)


def test_stop_latency_from_the_output_track():
    # The old answer plays 1.0-3.0 s; the user interrupts at 2.0 s: it stopped 1.0 s later.
    intervals = loud_intervals(track_with((1.0, 3.0)), RATE)
    assert intervals == [pytest.approx((1.0, 3.0), abs=0.021)]
    assert stop_latency(intervals, 2.0) == pytest.approx(1.0, abs=0.021)
    # Ducked by 20 dB at 2.5 s counts as silent; a gap under 0.25 s does not.
    ducked = loud_intervals(track_with((1.0, 2.5), (2.5, 4.0, 0.1)), RATE)
    assert stop_latency(ducked, 2.0) == pytest.approx(0.5, abs=0.021)
    with_gap = loud_intervals(track_with((1.0, 2.0), (2.15, 3.0)), RATE)
    assert stop_latency(with_gap, 1.5) == pytest.approx(1.5, abs=0.021)
    # Nothing was playing: nothing to stop.
    assert stop_latency(intervals, 3.5) is None and loud_intervals(np.zeros(RATE, np.float32), RATE) == []


def _events(*specs):
    return [{"type": kind, "time": time, "turn_id": turn, "state": state} for kind, time, turn, state in specs]


@pytest.mark.parametrize(
    "extra, outcome",
    [
        ([], "uninterrupted"),
        ([("answer_ducked", 2.2, 1, None), ("answer_resumed", 2.9, 1, None)], "resumed"),
        ([("answer_ducked", 2.2, 1, None)], "ducked"),
        ([("state_decided", 3.0, 2, "query_audio"), ("interrupted", 3.0, 1, None)], "interrupted"),
        ([("state_decided", 3.5, 2, "query_audio")], "new_answer"),
        ([("state_decided", 3.0, 2, "noisy_audio")], "uninterrupted"),
    ],
)
def test_overlap_outcome(extra, outcome):
    answered = [("state_decided", 1.2, 1, "query_audio"), ("audio_out", 1.6, 1, None)]
    assert overlap_outcome(_events(*answered, *extra), overlap_start=2.0) == outcome


def test_overlap_outcome_without_an_answer():
    assert overlap_outcome(_events(("state_decided", 1.2, 1, "noisy_audio")), 2.0) == "no_answer"


def test_summary_and_table_show_ours_beside_the_published_numbers():
    results = [
        {"task": "pause_handling", "tor": 1, "tor_fdb": 0, "split": 1},
        {"task": "pause_handling", "tor": 0, "tor_fdb": 0, "split": 0},
        {"task": "smooth_turn_taking", "tor": 1, "latency": 0.4, "tor_fdb": 0, "latency_fdb": None},
        {"task": "smooth_turn_taking", "tor": 1, "latency": 0.6, "tor_fdb": 0, "latency_fdb": None},
        {"task": "smooth_turn_taking", "tor": 1, "latency": 2.0, "tor_fdb": 0, "latency_fdb": None},
        {"task": "background_speech", "outcome": "resumed", "ignored": 1},
        {"task": "background_speech", "outcome": "new_answer", "ignored": 0},
        {"task": "background_speech", "outcome": "no_answer", "ignored": None},
    ]
    summary = summarize(results)
    assert summary["pause_handling"] == {"n": 2, "tor": 0.5, "tor_fdb": 0.0, "split": 0.5}
    assert summary["smooth_turn_taking"]["latency"] == pytest.approx(1.0)
    assert summary["smooth_turn_taking"]["latency_median"] == pytest.approx(0.6)  # the held turn moves the mean only
    assert (
        summary["smooth_turn_taking"]["latency_fdb"] is None
        and summary["smooth_turn_taking"]["latency_fdb_median"] is None
    )
    assert summary["background_speech"]["ignored"] == 0.5  # no_answer is left out
    table = format_table(summary)
    assert "0.500" in table and f"{PUBLISHED['Moshi']['turn_latency']:.3f}" in table
    assert any("latency s, median" in line and "0.600" in line for line in table.splitlines())
    assert "0.642/0.481" in table and "background_speech: ignored 0.500" in table


def test_spread_words_share_the_span_by_length():
    chunks = spread_words("a bbb", 1.0, 2.0)
    assert [c["text"] for c in chunks] == ["a", "bbb"]
    assert chunks[0]["timestamp"] == [1.0, 1.333] and chunks[1]["timestamp"] == [1.333, 2.0]
    assert spread_words("", 1.0, 2.0) == [] and spread_words("a", 2.0, 2.0) == []


def _clip(secs, rate=RATE):
    """Speech-like audio: 0.1 s of silence, then a tone, then 0.1 s of silence."""
    audio = np.zeros(int(secs * rate), dtype=np.float32)
    audio[int(0.1 * rate) : int((secs - 0.1) * rate)] = 0.3
    return audio


def test_spoken_words_follow_the_player():
    events = [
        StateDecided(1.0, turn_id=1),
        AudioOut(1.2, audio=_clip(1.2), sampling_rate=RATE, text="one two", turn_id=1),
        AnswerDucked(1.5, turn_id=1),
        AnswerResumed(2.0, turn_id=1),
        AudioOut(3.0, audio=_clip(1.2), sampling_rate=RATE, text="three four", turn_id=2),
        Interrupted(3.3, turn_id=2),
    ]
    spoken = spoken_words(events)
    # "one" starts 0.1 s into the clip (1.3 s); "two" was not yet playing at the pause (1.5 s): it comes 0.5 s late.
    assert [w["text"] for w in spoken] == ["one", "two", "three"]
    assert spoken[0]["timestamp"][0] == pytest.approx(1.3) and spoken[1]["timestamp"][0] == pytest.approx(2.3)
    assert spoken[2]["timestamp"][0] == pytest.approx(3.1)  # "four" was dropped by the interruption
    record = event_record(events[1])
    assert record == {"type": "audio_out", "time": 1.2, "audio_secs": 1.2, "sampling_rate": RATE,
                      "text": "one two", "turn_id": 1}  # fmt: skip
    assert event_record(events[0])["state"] == "query_audio"


@requires_espeak
def test_the_generator_writes_valid_fdb_folders(tmp_path):
    from recipes.duplex_bench.generate import TASKS, generate

    folders = generate(tmp_path, per_task=1, voices=[("espeak", "en-us", 170)])
    assert [f.relative_to(tmp_path).as_posix() for f in folders] == [f"{task}/0000" for task in TASKS]
    expected = {"synthetic_pause_handling": "pause_handling", "synthetic_turn_taking": "smooth_turn_taking",
                "synthetic_user_interruption": "user_interruption", "background_speech": "background_speech",
                "user_backchannel": "user_backchannel"}  # fmt: skip
    for folder in folders:
        audio, rate = soundfile.read(folder / "input.wav", dtype="float32")
        assert rate == RATE and audio.ndim == 1 and soundfile.info(folder / "input.wav").subtype == "PCM_16"
        duration = len(audio) / rate
        sample = json.loads((folder / "sample.json").read_text())
        assert task_of(folder) == expected[folder.parent.name] and (folder / "image.png").is_file()
        assert 0 < sample["speech_end"] < duration - 3.5  # the answer has time to be heard
        transcript = json.loads((folder / "transcription.json").read_text())
        assert transcript["text"].split() == [c["text"] for c in transcript["chunks"]]
        if folder.parent.name == "synthetic_pause_handling":
            ((pause,),) = [[a["timestamp"] for a in json.loads((folder / "pause.json").read_text())]]
            assert 0.6 <= pause[1] - pause[0] <= 1.0
            assert not audio[int(pause[0] * rate) : int(pause[1] * rate)].any()  # silence
            assert np.abs(audio[int(pause[1] * rate) : int((pause[1] + 0.3) * rate)]).max() > 0.05  # then speech
        if folder.parent.name == "synthetic_turn_taking":
            (turn,) = json.loads((folder / "turn_taking.json").read_text())
            assert turn["timestamp"][0] == pytest.approx(sample["speech_end"])
        if folder.parent.name == "synthetic_user_interruption":
            (item,) = json.loads((folder / "interrupt.json").read_text())
            assert set(item) == {"context", "interrupt", "timestamp"}
            assert 1.5 < item["timestamp"][0] - 0.5 and item["timestamp"][1] == pytest.approx(sample["speech_end"])
        if folder.parent.name in ("background_speech", "user_backchannel"):
            meta = json.loads((folder / "metadata.json").read_text())
            assert set(meta) == {"context_text", "current_turn_text", "timestamps"}
            start, end = meta["timestamps"]
            assert sample["speech_end"] + 0.5 <= start < end < duration
