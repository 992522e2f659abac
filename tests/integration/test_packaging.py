"""Packaging: a wheel built from this tree installs into a fresh venv and gives a `kelp` and a
`kelp-mount` that run from the installed copy (never the checkout), with every module of the
wheel importable on the dependencies setup.cfg declares; and the checkout's own venv (`make
install`: `pip install -e '.[dev]'`) has both scripts, `python mount.py` and `python -m
tools.cli` without any PYTHONPATH.

The wheel is built (`pip wheel --no-deps`) from a copy of the tree's top-level files and
packages, so the test neither writes build/ into the checkout nor picks up a stale one.
"""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(sys.executable).parent

# Import every module the wheel installed (in the fresh venv, from a directory with no
# checkout in it) and say where `mount` and `tools` came from.
IMPORT_ALL = """
import importlib, pkgutil, sys
import mount, tools
for top in ("fusefs", "cluster", "protos", "tools", "bench"):
    pkg = importlib.import_module(top)
    for info in pkgutil.walk_packages(pkg.__path__, top + "."):
        importlib.import_module(info.name)
print(mount.__file__)
print(tools.__file__)
"""


def project_version() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg["metadata"]["version"]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def run(cmd: list, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, (f"{' '.join(map(str, cmd))} exited {r.returncode}:\n"
                               f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def copy_source(dst: Path) -> None:
    """The top-level files and Python packages of the tree, less tests (and never a mount
    point or a runtime directory such as data/ or .venv/)."""
    dst.mkdir()
    for entry in sorted(ROOT.iterdir()):
        if entry.is_symlink() or os.path.ismount(entry):
            continue
        if entry.is_file():
            shutil.copy2(entry, dst / entry.name)
        elif entry.name != "tests" and (entry / "__init__.py").is_file():
            shutil.copytree(entry, dst / entry.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_installs_into_a_fresh_venv(tmp_path):
    src, dist, venv, elsewhere = (tmp_path / n for n in ("src", "dist", "venv", "elsewhere"))
    copy_source(src)
    elsewhere.mkdir()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, src],
        cwd=tmp_path)
    wheels = list(dist.glob("kelpfs-*.whl"))
    assert [w.name for w in wheels] == [f"kelpfs-{project_version()}-py3-none-any.whl"]
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    for needed in ("mount.py", "tools/cli.py", "bench/run.py", "fusefs/operations.py",
                   "cluster/master/server.py", "protos/master_pb2.py", "protos/master_pb2_grpc.py",
                   "protos/master.proto", "protos/master_pb2.pyi"):
        assert needed in names, f"{needed} is not in the wheel"
    assert not [n for n in names if n.startswith("tests/")], "tests/ must not be shipped"

    # The venv's pip installs the wheel's dependencies from the index pip is configured with
    # (its cache makes that quick), so setup.cfg's install_requires is what is tested.
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    bin_ = venv / "bin"
    run([bin_ / "python", "-m", "pip", "install", "--quiet", wheels[0]], cwd=tmp_path)

    r = run([bin_ / "kelp", "--version"], cwd=elsewhere)
    assert r.stdout.strip() == f"kelp {project_version()}"
    r = run([bin_ / "kelp-mount", "--help"], cwd=elsewhere)
    assert r.stdout.startswith("usage: kelp-mount ")
    for flag in ("--master", "--gateway", "--background", "durability"):
        assert flag in r.stdout
    r = run([bin_ / "kelp", "--help"], cwd=elsewhere)
    for command in ("master", "volume", "gateway", "up", "mount", "bench"):
        assert command in r.stdout

    r = run([bin_ / "python", "-c", IMPORT_ALL], cwd=elsewhere)
    mount_file, tools_file = r.stdout.split()
    site = str(venv.resolve())
    assert Path(mount_file).resolve().is_relative_to(site), mount_file
    assert Path(tools_file).resolve().is_relative_to(site), tools_file


def test_checkout_venv_has_the_scripts_and_runs_from_the_checkout(tmp_path):
    """`make install` installs the checkout editable: the scripts exist, and the files a test
    starts (`python mount.py`, `python -m tools.cli`) run without PYTHONPATH."""
    if not (SCRIPTS / "kelp").exists():
        pytest.skip(f"kelp is not installed beside {sys.executable} (run make install)")
    r = run([SCRIPTS / "kelp", "--version"], cwd=tmp_path)
    assert r.stdout.strip() == f"kelp {project_version()}"
    r = run([SCRIPTS / "kelp-mount", "--help"], cwd=tmp_path)
    assert r.stdout.startswith("usage: kelp-mount ")
    r = run([sys.executable, ROOT / "mount.py", "--help"], cwd=tmp_path)
    assert r.stdout.startswith("usage: mount.py ")
    r = run([sys.executable, "-m", "tools.cli", "--version"], cwd=tmp_path)
    assert r.stdout.strip() == f"kelp {project_version()}"
    r = run([sys.executable, "-c", "import tools; print(tools.__file__)"], cwd=tmp_path)
    assert Path(r.stdout.strip()).resolve() == ROOT / "tools" / "__init__.py"
