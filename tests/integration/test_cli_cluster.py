"""The `kelp` command line against real processes: `up`/`status`/`down` of a background
cluster (exactly its pids), `up --mount`, upload/ls/download/rm of a tree, and
`kelp mount --background` / `kelp umount`.

Everything `kelp up` starts outlives the command (own sessions), so every test that runs it
ends with `kelp down` in a finally, and then kills by pid (read from cluster.json, checked to
still be one of our nodes) whatever is left.
"""
from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import dump_logs, kelp, make_cluster, wait_until
from tests.integration.mountutil import needs_fuse
from tools.local_cluster import REPO_ROOT, is_our_node, pid_alive
from tools.mounts import unmount

INLINE_MAX = 65536  # the master's default: files up to this stay inline


def read_state(data: Path) -> dict:
    return json.loads((data / "cluster.json").read_text())


def node_pids(data: Path) -> dict[str, int]:
    return {name: spec["pid"] for name, spec in read_state(data)["nodes"].items()}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def force_down(data: Path, pids: dict[str, int], mountpoint: Path | None = None) -> None:
    """Cleanup after a `kelp up` test, whatever state it left: `kelp down`, then unmount and
    kill by pid (only pids that are still our processes) what is still there."""
    if (data / "cluster.json").exists():
        kelp("down", "--data", str(data), timeout=60)
    if mountpoint is not None:
        unmount(mountpoint)
    for pid in pids.values():
        if pid and pid_alive(pid) and is_our_node(pid):
            os.kill(pid, signal.SIGKILL)


def is_mount_process(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"mount.py" in fh.read()
    except OSError:
        return False


def table_rows(text: str) -> list[list[str]]:
    """The cells of each body row of a rich table printed by kelp."""
    rows = []
    for line in text.splitlines():
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


@pytest.mark.timeout(180)
def test_up_status_down_exact_pids_and_refuse_second_up(tmp_path):
    data = tmp_path / "data"
    pids: dict[str, int] = {}
    try:
        up = kelp("up", "--data", str(data), "--ephemeral-ports", "--volumes", "2", timeout=120)
        if (data / "cluster.json").exists():
            pids = node_pids(data)
        assert up.returncode == 0, up.stderr.decode()
        state = read_state(data)
        assert sorted(state["nodes"]) == ["g0", "m0", "v0", "v1"]
        assert all(pid_alive(p) for p in pids.values()), pids
        master = state["nodes"]["m0"]["grpc_address"]
        assert master.startswith("127.0.0.1:")
        assert not master.endswith(":19333")
        assert master in up.stdout.decode()

        # Secure by default: the credentials live in DATA/tls, readable by their owner only,
        # and without them the CLI cannot reach the master.
        tls = data / "tls"
        assert stat.S_IMODE(tls.stat().st_mode) == 0o700
        keys = [*tls.glob("*.key"), *tls.glob("curve/*.key_secret")]
        assert len(keys) >= 10
        assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys), keys
        plain = kelp("status", "--master", master, timeout=60)
        assert plain.returncode == 1
        assert "--tls-dir" in plain.stderr.decode()
        st = kelp("status", "--master", master, "--tls-dir", str(tls), check=True)
        assert "insecure" not in st.stdout.decode()
        rows = {r[0]: r for r in table_rows(st.stdout.decode())}
        assert set(rows) == {"m0", "v0", "v1", "g0"}, st.stdout.decode()
        assert all(r[3] == "up" for r in rows.values()), rows
        assert rows["m0"][1] == "master"
        assert rows["g0"][1] == "gateway"
        assert rows["v0"][2] == state["nodes"]["v0"]["grpc_address"]

        # The original interface works for the user who ran `kelp up`, from where they ran
        # it: the CLI finds ./data/tls by itself.
        (tmp_path / "hello.txt").write_text("hello\n")
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), KELP_MASTER=master)
        for argv in (["upload", "-p", "hello.txt"], ["ls", "-p", "/"]):
            r = subprocess.run([sys.executable, "-m", "tools.cli", *argv], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
        assert "hello.txt" in r.stdout

        again = kelp("up", "--data", str(data), "--ephemeral-ports", "--volumes", "2")
        assert again.returncode == 1
        err = again.stderr.decode().strip()
        assert "already running" in err, err
        assert len(err.splitlines()) == 1, err
        assert "Traceback" not in err
        assert node_pids(data) == pids, "a refused `up` must not touch cluster.json"
        assert all(pid_alive(p) for p in pids.values())

        down = kelp("down", "--data", str(data), check=True)
        assert "stopped 4 nodes" in down.stderr.decode()
        for name, pid in pids.items():
            wait_until(lambda pid=pid: gone(pid), timeout=10, what=f"{name} (pid {pid}) gone")
        # down again: nothing running, still fine
        assert kelp("down", "--data", str(data)).returncode == 0
        st = kelp("status", "--master", master, timeout=60)
        assert st.returncode == 1
        assert "Traceback" not in st.stderr.decode()
    finally:
        force_down(data, pids)


@pytest.mark.mount
@needs_fuse
@pytest.mark.timeout(180)
def test_up_with_mount_and_down_unmounts(tmp_path):
    data = tmp_path / "data"
    mnt = tmp_path / "mnt"
    pids: dict[str, int] = {}
    mount_pid = 0
    try:
        up = kelp("up", "--data", str(data), "--ephemeral-ports", "--volumes", "1",
                  "--mount", str(mnt), timeout=120)
        if (data / "cluster.json").exists():
            pids = node_pids(data)
        assert up.returncode == 0, up.stderr.decode()
        assert os.path.ismount(mnt)
        mount_pid = int((data / "pids" / "mount.pid").read_text())
        pids["mount"] = mount_pid
        assert pid_alive(mount_pid)
        (mnt / "hello.txt").write_text("through kelp up --mount\n")
        assert (mnt / "hello.txt").read_text() == "through kelp up --mount\n"
        if os.geteuid() == 0:
            # run as root, the mount is for everyone (allow_other), the kernel checking modes
            with open("/proc/self/mounts") as fh:
                opts = next(line.split()[3] for line in fh if line.split()[1] == str(mnt))
            assert "allow_other" in opts.split(","), opts
            (mnt / "secret").write_text("root only\n")
            os.chmod(mnt / "secret", 0o600)
            os.chmod(mnt / "hello.txt", 0o644)
            # as nobody, entering the mount while still root (pytest's tmp dirs are 0700)
            seen = subprocess.run(["cat", "hello.txt", "secret"], cwd=mnt, user=65534,
                                  group=65534, extra_groups=[], capture_output=True, timeout=30)
            assert seen.stdout == b"through kelp up --mount\n", seen
            assert b"Permission denied" in seen.stderr, seen
            assert seen.returncode == 1, seen

        kelp("down", "--data", str(data), check=True)
        assert not os.path.ismount(mnt)
        # down waits for the mount process, and its pid file is gone however the race went
        assert not pid_alive(mount_pid)
        assert not (data / "pids" / "mount.pid").exists()
        for name, pid in pids.items():
            wait_until(lambda pid=pid: gone(pid), timeout=15, what=f"{name} (pid {pid}) gone")
    finally:
        force_down(data, pids, mnt)
        if mount_pid and pid_alive(mount_pid) and is_mount_process(mount_pid):
            os.kill(mount_pid, signal.SIGKILL)


# ---------------------------------------------------------------- files and kelp mount


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    cluster = make_cluster(tmp_path_factory.mktemp("cli") / "cluster", volumes=2)
    try:
        cluster.start(timeout=40)
        yield cluster
    except BaseException:
        dump_logs(cluster)
        raise
    finally:
        cluster.stop()


@pytest.mark.timeout(120)
def test_upload_ls_download_rm_tree(cli_cluster, tmp_path):
    master = cli_cluster.master_addr
    src = tmp_path / "photos"
    (src / "2024" / "june").mkdir(parents=True)
    files = {"readme.txt": b"hello kelp\n", "2024/a.bin": os.urandom(300_000),
             "2024/june/b.bin": os.urandom(5 * 1024 * 1024 + 3), "2024/june/empty": b"",
             "2024/june/c.txt": b"c" * 4097}
    for rel, content in files.items():
        (src / rel).write_bytes(content)

    kelp("upload", "-p", str(src), "-r", "--to", "/remote", "--replication", "2",
         "--master", master, check=True)

    listed: dict[str, list[str]] = {}
    for sub in ("", "/2024", "/2024/june"):
        out = kelp("ls", "-l", f"/remote/photos{sub}", "--master", master, check=True)
        for row in table_rows(out.stdout.decode()):
            listed[(sub.lstrip("/") + "/" if sub else "") + row[0]] = row
    for rel, content in files.items():
        row = listed.get(rel)
        assert row is not None, f"{rel} missing from kelp ls -l: {sorted(listed)}"
        _name, mode, size, chunks, replicas = row[:5]
        assert mode.startswith("-"), row
        assert int(size) == len(content), row
        if len(content) > INLINE_MAX:
            assert int(chunks) >= 1, row
            assert replicas == "2", row
        elif content:  # a small file's bytes stay in the master's metadata
            assert (chunks, replicas) == ("inline", "master"), row
    assert listed["2024/"][1].startswith("d")
    assert listed["2024/june/"][1].startswith("d")
    short = kelp("ls", "/remote/photos/2024/june", "--master", master, check=True)
    assert short.stdout.decode().split() == ["b.bin", "c.txt", "empty"]

    out = tmp_path / "b.copy"
    kelp("download", "/remote/photos/2024/june/b.bin", "-o", str(out), "--master", master,
         check=True)
    assert out.read_bytes() == files["2024/june/b.bin"]
    assert not list(tmp_path.glob("*.kelp-part"))
    piped = kelp("download", "/remote/photos/readme.txt", "-o", "-", "--master", master,
                 check=True)
    assert piped.stdout == files["readme.txt"]

    rm = kelp("rm", "-r", "/remote/photos", "--master", master, check=True)
    assert re.search(r"removed 8 entries", rm.stderr.decode()), rm.stderr.decode()
    assert kelp("ls", "/remote", "--master", master, check=True).stdout.decode().split() == []
    missing = kelp("ls", "-l", "/remote/photos", "--master", master)
    assert missing.returncode == 1
    assert len(missing.stderr.decode().strip().splitlines()) == 1


@pytest.mark.mount
@needs_fuse
@pytest.mark.timeout(120)
def test_kelp_mount_background_and_umount(cli_cluster, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid_file, log_file = tmp_path / "mount.pid", tmp_path / "mount.log"
    pid = 0
    try:
        started = time.monotonic()
        kelp("mount", str(mnt), "--master", cli_cluster.master_addr,
             "--gateway", cli_cluster.gateway_addr, "--background",
             "--pid-file", str(pid_file), "--log-file", str(log_file), check=True, timeout=60)
        assert os.path.ismount(mnt)
        pid = int(pid_file.read_text())
        assert pid_alive(pid)
        assert pid != os.getpid()
        assert time.monotonic() - started < 30
        (mnt / "via-kelp-mount").write_bytes(b"ok")
        assert (mnt / "via-kelp-mount").read_bytes() == b"ok"

        res = kelp("umount", str(mnt), check=True)
        assert res.stderr == b""
        assert not os.path.ismount(mnt)
        wait_until(lambda: gone(pid), timeout=15, what=f"mount process {pid} gone")
        assert not pid_file.exists()  # removed at unmount

        # a directory that is not a mount point (any more): refused, one line, exit 1
        res = kelp("umount", str(mnt))
        assert res.returncode == 1
        err = res.stderr.decode().strip()
        assert len(err.splitlines()) == 1, err
        assert "not a mount point" in err, err
        res = kelp("umount", str(tmp_path / "no-such-dir"))
        assert res.returncode == 1
        assert len(res.stderr.decode().strip().splitlines()) == 1
    finally:
        unmount(mnt)
        if pid and pid_alive(pid) and is_mount_process(pid):
            os.kill(pid, signal.SIGKILL)
