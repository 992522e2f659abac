"""Path arithmetic the mount's modules share (the kernel hands us absolute paths)."""
from __future__ import annotations

import posixpath


def parent_of(path: str) -> str:
    """The directory holding `path` ("/" for the root and its children)."""
    return posixpath.dirname(path.rstrip("/")) or "/"
