"""Keep library noise off the user's terminal: known third-party warnings and raw ITK warnings.

The command line and the worker call :func:`quiet_third_party` once at start unless the user asked
for details (``samtune -v``, or ``SAMTUNE_VERBOSE=1`` for the worker). Only the named messages are
hidden, never SAMTune's own warnings; the library itself changes no global state on import.
"""

from __future__ import annotations

import os
import warnings

#: ``(category, message regex)`` of warnings third-party packages print on every run.
THIRD_PARTY_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"Importing from timm\.models\.\w+ is deprecated"),  # MobileSAM / LiteMedSAM code
    (UserWarning, r"Overwriting tiny_vit_\w+ in registry"),  # two packages register TinyViT in timm
)

#: Environment variable that shows them (``1``) in the worker, which has no ``-v``.
VERBOSE_ENV = "SAMTUNE_VERBOSE"


def verbose_from_environment() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_third_party(*, verbose: bool = False) -> None:
    """Hide :data:`THIRD_PARTY_WARNINGS` and ITK's own warning printouts, unless ``verbose``."""
    if verbose:
        return
    for category, message in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    try:
        import SimpleITK as sitk
    except ImportError:  # nothing of ITK's to silence
        return
    sitk.ProcessObject.SetGlobalWarningDisplay(False)


__all__ = ["THIRD_PARTY_WARNINGS", "VERBOSE_ENV", "quiet_third_party", "verbose_from_environment"]
