"""Install what KelpFS needs into the current interpreter's environment (the Makefile runs it
inside .venv): the Python packages setup.cfg lists (plus the extras asked for), a .pth entry so
this checkout's packages import from anywhere, and a `kelp` launcher beside the interpreter.

setup.cfg stays the one list of dependencies; this script only reads it. (The top level of the
repository is fixed, so there is no pyproject.toml for `pip install -e .` to use.)
"""
from __future__ import annotations

import configparser
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirements(extras: list[str]) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    reqs = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    for extra in extras:
        reqs += [r.strip() for r in cfg["options.extras_require"].get(extra, "").splitlines()
                 if r.strip()]
    return reqs


def main(argv: list[str]) -> int:
    extras = [a for a in argv if not a.startswith("-")]
    reqs = requirements(extras)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *reqs], check=True)
    site = Path(sysconfig.get_paths()["purelib"])
    (site / "kelpfs-checkout.pth").write_text(str(ROOT) + "\n")
    launcher = Path(sys.executable).parent / "kelp"
    launcher.write_text(f"#!{sys.executable}\nimport sys\nfrom tools.cli import main\n"
                        "sys.exit(main())\n")
    launcher.chmod(0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
