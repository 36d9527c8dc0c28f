"""Slicer-side helpers of the SAMTune module (they import ``slicer``; the core package does not)."""
