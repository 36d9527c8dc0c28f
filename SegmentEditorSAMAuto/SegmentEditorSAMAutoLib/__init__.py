"""The SAM auto Segment Editor effect."""
