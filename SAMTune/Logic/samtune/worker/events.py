"""The event protocol (version 1): one JSON object per line, shared by the worker, ``--events`` and
the run folder's ``events.jsonl``. See ``docs/worker-protocol.md``.

Each line is ``{"v": 1, "event": TYPE, "time": ISO-8601 UTC, ...fields}``; NaN and infinities
become ``null`` so every line is strict JSON.
"""

from __future__ import annotations

import datetime
import json
import math
import threading
from collections.abc import Callable
from typing import Any, TextIO

#: Version of the job format and of the event protocol.
PROTOCOL_VERSION = 1

#: Every event type the protocol defines.
EVENT_TYPES = ("started", "progress", "metrics", "checkpoint", "log", "finished", "cancelled", "error")


def _plain(value: Any) -> Any:
    """JSON-safe values: NaN and infinities become null, numpy/torch scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy / torch arrays and scalars
        return _plain(value.tolist())
    if hasattr(value, "item") and callable(value.item):
        return _plain(value.item())
    return str(value)


def event_line(event: dict[str, Any]) -> str:
    """Serialise an event dict (its type under ``event``, as on the wire) as one protocol line (no newline)."""
    if event.get("event") not in EVENT_TYPES:
        raise ValueError(f"Unknown event type {event.get('event')!r}; the protocol defines {', '.join(EVENT_TYPES)}.")
    reserved = sorted({"v", "time"} & set(event))
    if reserved:
        raise ValueError(f"Event fields {reserved} are the protocol's own; name them otherwise.")
    fields = {k: v for k, v in event.items() if k != "event"}
    record = {
        "v": PROTOCOL_VERSION,
        "event": event["event"],
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        **_plain(fields),
    }
    return json.dumps(record, allow_nan=False)


class EventWriter:
    """Writes events as protocol lines to a stream, flushing each line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        line = event_line(event)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def parse_event_line(line: str) -> dict[str, Any] | None:
    """The event of a protocol line, or ``None`` for anything else (free text, other versions).

    The result carries the event type under ``event`` as written; unknown fields are kept.
    """
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("v") != PROTOCOL_VERSION or record.get("event") not in EVENT_TYPES:
        return None
    return record


Emit = Callable[[dict[str, Any]], None]

__all__ = ["EVENT_TYPES", "PROTOCOL_VERSION", "Emit", "EventWriter", "event_line", "parse_event_line"]
