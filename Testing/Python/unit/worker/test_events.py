"""The event protocol (samtune.worker.events): one strict-JSON line per event, and what a reader accepts."""

from __future__ import annotations

import datetime
import io
import json
import math
import threading
from typing import Any

import numpy as np
import pytest
import torch

from samtune.worker.events import EVENT_TYPES, PROTOCOL_VERSION, EventWriter, event_line, parse_event_line


def _strict(line: str) -> dict[str, Any]:
    """Parse ``line`` as strict JSON: NaN and infinities are refused, as a non-Python reader would."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant} in {line!r}")

    record = json.loads(line, parse_constant=refuse)
    assert isinstance(record, dict)
    return record


# --- event_line ---------------------------------------------------------------------------------------


def test_event_line_carries_the_type_under_event_the_version_and_a_utc_time() -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    line = event_line({"event": "progress", "stage": "train", "step": 3, "total": 9})
    after = datetime.datetime.now(datetime.timezone.utc)
    assert "\n" not in line
    record = _strict(line)
    assert record["event"] == "progress" and record["v"] == PROTOCOL_VERSION == 1
    assert record["stage"] == "train" and record["step"] == 3 and record["total"] == 9
    stamp = datetime.datetime.fromisoformat(record["time"])
    assert stamp.utcoffset() == datetime.timedelta(0)
    # milliseconds are written, so the stamp may fall up to 1 ms before `before`
    assert before - datetime.timedelta(milliseconds=1) <= stamp <= after


def test_event_line_leaves_the_event_dict_untouched() -> None:
    event = {"event": "metrics", "epoch": 1, "val_dice": float("nan"), "per_class": [float("inf")]}
    copy = dict(event)
    event_line(event)
    assert event.keys() == copy.keys() and event["epoch"] == 1 and math.isnan(event["val_dice"])
    assert event["per_class"] == [float("inf")]


def test_non_finite_numbers_become_null_at_every_depth() -> None:
    line = event_line(
        {
            "event": "metrics",
            "loss": float("nan"),
            "hd95": float("inf"),
            "low": float("-inf"),
            "dice": 0.5,
            "per_case": {"a": float("nan"), "b": [1.0, float("inf"), (float("nan"), 2)]},
        }
    )
    record = _strict(line)
    assert record["loss"] is None and record["hd95"] is None and record["low"] is None
    assert record["dice"] == 0.5
    assert record["per_case"] == {"a": None, "b": [1.0, None, [None, 2]]}


@pytest.mark.parametrize(
    ("value", "expected", "kind"),
    [
        (np.float32(0.25), 0.25, float),
        (np.float64(0.5), 0.5, float),
        (np.int64(7), 7, int),
        (np.uint8(200), 200, int),
        (np.bool_(True), True, bool),
        (torch.tensor(0.75), 0.75, float),
        (torch.tensor(3), 3, int),
        (torch.tensor(2.5, dtype=torch.float16), 2.5, float),
        (np.float32("nan"), None, type(None)),
        (torch.tensor(float("inf")), None, type(None)),
    ],
    ids=[
        "np.float32",
        "np.float64",
        "np.int64",
        "np.uint8",
        "np.bool_",
        "torch float",
        "torch int",
        "torch half",
        "np nan",
        "torch inf",
    ],  # fmt: skip
)
def test_numpy_and_torch_scalars_are_written_as_plain_numbers(value: Any, expected: Any, kind: type) -> None:
    record = _strict(event_line({"event": "metrics", "value": value, "in_list": [value]}))
    assert type(record["value"]) is kind and record["value"] == expected
    assert record["in_list"] == [expected]


def test_tuples_become_lists_and_keys_become_text() -> None:
    record = _strict(event_line({"event": "log", "box": (1, 2, 3), "by_epoch": {1: "a", 2: "b"}}))
    assert record["box"] == [1, 2, 3] and record["by_epoch"] == {"1": "a", "2": "b"}


def test_objects_json_does_not_know_are_written_as_their_text() -> None:
    from pathlib import PurePosixPath

    record = _strict(event_line({"event": "finished", "model": PurePosixPath("/runs/a/model")}))
    assert record["model"] == "/runs/a/model"


# --- parse_event_line ---------------------------------------------------------------------------------


def test_every_protocol_event_type_reads_back_with_its_fields() -> None:
    for kind in EVENT_TYPES:
        line = event_line({"event": kind, "message": f"a {kind}", "step": 2})
        event = parse_event_line(line + "\n")
        assert event is not None, kind
        assert event["event"] == kind and event["message"] == f"a {kind}" and event["step"] == 2
        assert event["v"] == PROTOCOL_VERSION and "time" in event


def test_surrounding_whitespace_and_unknown_fields_are_kept_readable() -> None:
    event = parse_event_line('   {"v": 1, "event": "log", "message": "hi", "future_field": [1]}  \r\n')
    assert event == {"v": 1, "event": "log", "message": "hi", "future_field": [1]}


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        "Traceback (most recent call last):",
        "WARNING torch: something",
        '  File "x.py", line 1, in <module> {v: 1}',
        "[1, 2, 3]",
        '"just a string"',
    ],
    ids=["empty", "newline", "traceback", "warning", "text with braces", "json list", "json string"],
)
def test_free_text_is_not_an_event(line: str) -> None:
    assert parse_event_line(line) is None


@pytest.mark.parametrize(
    "line",
    [
        '{"v": 2, "event": "progress"}',
        '{"v": 0, "event": "progress"}',
        '{"v": "1", "event": "progress"}',
        '{"event": "progress"}',
        '{"v": null, "event": "finished"}',
    ],
    ids=["v2", "v0", "v as text", "no version", "null version"],
)
def test_lines_of_another_protocol_version_are_not_events(line: str) -> None:
    assert parse_event_line(line) is None


@pytest.mark.parametrize(
    "line",
    [
        '{"v": 1, "event": "nonsense"}',
        '{"v": 1, "event": "Progress"}',
        '{"v": 1, "type": "progress"}',
        '{"v": 1}',
        '{"v": 1, "event": null}',
        '{"v": 1, "event": ["progress"]}',
    ],
    ids=["unknown", "wrong case", "type key instead of event", "no type", "null type", "list type"],
)
def test_unknown_event_types_are_not_events(line: str) -> None:
    assert parse_event_line(line) is None


@pytest.mark.parametrize(
    "line",
    [
        "{not json",
        '{"v": 1, "event": "progress",',
        '{"v": 1, "event": "progress"} trailing',
        "{'v': 1, 'event': 'progress'}",
        '{"v": 1, "event": "progress", "step": NaN',
    ],
    ids=["not json", "cut short", "trailing text", "single quotes", "cut after NaN"],
)
def test_malformed_json_is_not_an_event_and_does_not_raise(line: str) -> None:
    assert parse_event_line(line) is None


# --- EventWriter --------------------------------------------------------------------------------------


class _FlushRecorder(io.StringIO):
    """A stream that remembers what had been written each time it was flushed."""

    def __init__(self) -> None:
        super().__init__()
        self.at_flush: list[str] = []

    def flush(self) -> None:
        super().flush()
        self.at_flush.append(self.getvalue())


def test_event_writer_writes_one_line_per_event_and_flushes_after_each() -> None:
    stream = _FlushRecorder()
    emit = EventWriter(stream)
    emit({"event": "started", "kind": "train"})
    emit({"event": "progress", "step": 1, "total": 2, "loss": float("nan")})
    emit({"event": "finished", "model": "m"})
    lines = stream.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == 4  # every line ends with a newline, nothing else is written
    events = [parse_event_line(line) for line in lines[:-1]]
    assert [e["event"] for e in events if e] == ["started", "progress", "finished"]
    assert events[1] is not None and events[1]["loss"] is None
    # each event was complete on the stream when it was flushed: a reader never waits for the next one
    assert len(stream.at_flush) == 3
    assert [text.count("\n") for text in stream.at_flush] == [1, 2, 3]
    assert all(text.endswith("\n") for text in stream.at_flush)


def test_event_writer_keeps_lines_whole_when_threads_emit_together() -> None:
    stream = io.StringIO()
    emit = EventWriter(stream)

    def many(thread: int) -> None:
        for step in range(200):
            emit({"event": "progress", "thread": thread, "step": step, "message": "x" * 50})

    threads = [threading.Thread(target=many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = [parse_event_line(line) for line in stream.getvalue().splitlines()]
    assert len(events) == 800 and all(e is not None for e in events)
    for n in range(4):
        assert [e["step"] for e in events if e and e["thread"] == n] == list(range(200))


def test_arrays_become_lists() -> None:
    line = json.loads(event_line({"event": "metrics", "dice": np.array([0.5, 0.25]), "shape": torch.tensor([2, 3])}))
    assert line["dice"] == [0.5, 0.25] and line["shape"] == [2, 3]


@pytest.mark.parametrize("event", [{"event": "log", "v": 2}, {"event": "log", "time": "then"}, {"event": "done"}, {}])
def test_an_event_the_protocol_would_not_read_is_refused_when_written(event: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="protocol"):
        event_line(event)
