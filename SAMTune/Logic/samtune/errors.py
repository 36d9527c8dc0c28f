"""One error hierarchy for SAMTune.

Every error a user can cause derives from :class:`SAMTuneError` and also from the
built-in exception a caller would expect (``ValueError`` for bad input,
``RuntimeError`` for a failing environment), so ``except ValueError`` keeps working.

Messages follow one rule: say what was received, what was expected, and what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: Process exit code per error kind (the ``samtune`` command and the worker share them).
EXIT_CODES = {
    "internal": 1,
    "configuration": 2,
    "data": 3,
    "weights": 4,
    "device": 5,
    "output": 6,
    "diverged": 7,
    "out_of_memory": 8,
    "cancelled": 9,
}


class SAMTuneError(Exception):
    """Base class of every error SAMTune raises on purpose."""

    #: Short machine-readable kind, used by the worker's ``error`` events.
    kind: str = "internal"


class CancelledError(SAMTuneError):
    """The user asked a job to stop (STOP file, SIGTERM, Cancel); nothing half-written is left."""

    kind = "cancelled"


class TrainingCancelledError(CancelledError):
    """A training run was asked to stop; a checkpoint was written (when a checkpoint hook was given)."""


class TrainingDivergedError(SAMTuneError, RuntimeError):
    """The loss became NaN or infinite."""

    kind = "diverged"


class OutOfMemoryError(SAMTuneError, RuntimeError):
    """The device ran out of memory."""

    kind = "out_of_memory"


class ConfigurationError(SAMTuneError, ValueError):
    """A configuration value, option or name is invalid."""

    kind = "configuration"


class UnknownNameError(ConfigurationError, KeyError):
    """A name (backbone, preset, option value) is not one of the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class DataError(SAMTuneError, ValueError):
    """Input images or labels cannot be used as given."""

    kind = "data"


class UnsupportedImageError(DataError):
    """The file or array is not an image SAMTune can read (type, dimension, format)."""


class GeometryMismatchError(DataError):
    """Image and label (or two volumes) do not share the same voxel grid."""


class LabelError(DataError):
    """A label map is empty, all foreground, non-integer or otherwise unusable."""


class WeightsError(SAMTuneError, RuntimeError):
    """Model weights are missing, corrupt, unverifiable or for another architecture."""

    kind = "weights"


class DeviceError(SAMTuneError, RuntimeError):
    """The requested compute device is not available."""

    kind = "device"


class OutputError(SAMTuneError, OSError):
    """An output path cannot be written (missing folder, not writable, disk full)."""

    kind = "output"


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return a ``" Did you mean 'x'?"`` suffix for ``name``, or ``""`` if nothing is close.

    Args:
        name: The value the user gave.
        choices: The valid values.
    """
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_name(what: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build an :class:`UnknownNameError` that lists the valid names and suggests the nearest.

    Args:
        what: What kind of name it is, e.g. ``"backbone"``.
        name: The value the user gave.
        choices: The valid values.
    """
    valid = sorted(choices)
    return UnknownNameError(f"Unknown {what} '{name}'.{did_you_mean(name, valid)} Valid {what}s: {', '.join(valid)}.")
