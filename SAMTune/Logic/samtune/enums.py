"""String enumerations that work on Python 3.9 (Slicer 5.8) and later.

``enum.StrEnum`` exists only from Python 3.11, so the core defines its own.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from samtune.errors import unknown_name

E = TypeVar("E", bound="StrEnum")


class StrEnum(str, Enum):
    """An enumeration whose members are strings; ``parse`` gives a "did you mean" error."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls: type[E], value: object, *, what: str | None = None) -> E:
        """Return the member whose value equals ``value`` (case-insensitive).

        Raises:
            UnknownNameError: Listing the valid values and the nearest one.
        """
        if isinstance(value, cls):
            return value
        text = str(value).strip().lower()
        for member in cls:
            if member.value.lower() == text:
                return member
        raise unknown_name(what or cls.__name__, str(value), [m.value for m in cls])
