"""Is a path a mount point, and unmount it: the one copy that `kelp umount`, `kelp down`, the
test harness and the benchmarks share.

`is_mounted` reads /proc/self/mounts, so a FUSE mount whose process died (where stat fails
with ENOTCONN and os.path.ismount says False) still counts. `unmount` tries `fusermount3 -u`
(libfuse 3; `fusermount` where only libfuse 2 is installed) first (a clean unmount, which
fails while files are open there), then, with `lazy`, the lazy forms that detach a busy mount
or one whose process is gone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def fusermount() -> str:
    """The FUSE unmount helper: fusermount3 with libfuse 3, else libfuse 2's fusermount."""
    return "fusermount3" if shutil.which("fusermount3") else "fusermount"


def is_mounted(path: str | Path) -> bool:
    target = os.path.abspath(path).replace(" ", "\\040")
    with open("/proc/self/mounts") as fh:
        return any(len(f) > 1 and f[1] == target for f in (line.split() for line in fh))


def unmount(path: str | Path, lazy: bool = True) -> bool:
    """Unmount `path` if it is mounted; True when it is not mounted afterwards."""
    helper = fusermount()
    steps = [[helper, "-u", str(path)]]
    if lazy:
        steps += [[helper, "-uz", str(path)], ["umount", "-l", str(path)]]
    for cmd in steps:
        if not is_mounted(path):
            return True
        try:
            subprocess.run(cmd, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
    return not is_mounted(path)
