"""A local cluster of real processes: what `kelp up`/`kelp down` run and what the tests reuse.

Each node is a `python -m tools.cli <kind> ...` child in its own session (so it outlives the
`kelp up` that started it), with its log and pid file under the cluster's data dir, and a
cluster.json that `kelp status`/`kelp down` read. Ports are given explicitly; 0 means "pick a
free loopback port now" (the tests' mode). Health: gRPC health service for master and volume
servers, and the master's view for volume servers and the gateway (registered and alive).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cluster.common import rpc
from cluster.common.config import option
from cluster.common.errors import FsError
from cluster.common.security import Transport
from fusefs.master_client import MasterClient
from protos import master_pb2

# The directory holding the packages (a checkout, or site-packages once installed): node
# processes (`python -m tools.cli`) start there, so `-m` finds this copy of the code first and
# never a `tools` package that happens to sit in the caller's working directory.
REPO_ROOT = Path(__file__).resolve().parent.parent
# Where `kelp up` keeps the credentials it makes, and where the CLI looks for them.
DEFAULT_TLS_DIR = "./data/tls"


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            lo, hi = (int(x) for x in fh.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()  # ports this process chose already (nodes not yet bound)
_handed_out_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, chosen below the kernel's ephemeral range: a port from that
    range (what bind(0) returns) can be taken by any outgoing connection on the machine in
    the moment between this check and the node's own bind. A port is never handed out twice
    by one process, so the nodes of a cluster planned together cannot collide."""
    lo, _ = _ephemeral_range()
    top = max(2048, lo) - 1
    rng = random.Random()
    for _ in range(500):
        port = rng.randint(max(1024, top - 20000), top)
        with _handed_out_lock:
            if port in _handed_out:
                continue
            _handed_out.add(port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # fall back to the kernel
        s.bind((host, 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid`, zombies included, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait until pid has exited (or is a zombie); False if it still runs after timeout."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def is_our_node(pid: int) -> bool:
    """True when pid is still one of our node processes (guards against pid reuse)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"tools.cli" in fh.read()
    except OSError:
        return False


@dataclass
class NodeSpec:
    kind: str                 # master | volume | gateway
    name: str
    args: list[str]
    grpc_address: str = ""    # master/volume gRPC; gateway ZMQ address
    http_address: str = ""
    pid: int = 0
    data: str = ""
    zmq_address: str = ""     # master: the mounts' mutation channel

    def log_path(self, root: Path) -> Path:
        return root / "logs" / f"{self.name}.log"


@dataclass
class UpOptions:
    """What `kelp up` can be told: flags, KELP_UP_* variables or an [up] table in TOML."""
    data: str = option("./data", "data dir for every node, pid files, logs and cluster.json")
    volumes: int = option(3, "volume servers to start")
    mount: str = option("", "also mount the cluster at this directory", metavar="DIR",
                        default_text="no mount")
    ephemeral_ports: bool = option(False, "pick free ports instead of 9333/19333, "
                                   "8080+/18080+, 7000/7001")
    allow_other: bool | None = option(None, "let other users use the mount",
                                      default_text="on when run as root")
    insecure: bool = option(False, "run without TLS and CURVE (no credentials in DATA/tls): "
                            "any local process can then read and change every file through "
                            "the cluster's ports")
    masters: int = option(1, "masters to start; more than one share the PostgreSQL "
                          "database --meta names (one leads, the others take over)")
    meta: str = option("", "every master's metadata store: postgresql://... (required for "
                       "--masters > 1)", default_text="SQLite in each master's data dir")


@dataclass
class ClusterLayout:
    data_dir: str
    ip: str = "127.0.0.1"
    master_port: int = 9333
    master_grpc_port: int = 19333
    master_zmq_port: int = 19334
    volumes: int = 3
    volume_port: int = 8080       # volume i uses volume_port + i and volume_grpc_port + i
    volume_grpc_port: int = 18080
    gateway_port: int = 7000
    gateway_http_port: int = 7001
    master_name: str = "m0"
    volume_size_limit: int = 0    # 0 = the master's default
    heartbeat_interval: float = 0.0
    extra_master_args: list[str] = field(default_factory=list)
    extra_volume_args: list[str] = field(default_factory=list)
    tls_dir: str | None = None    # the cluster's credentials (kelp certs); None = plain
    masters: int = 1              # master k > 0 is m<k>, on the ports of master 0 + 10 * k
    meta: str = ""                # every master's --meta (PostgreSQL; needed for masters > 1)


class LocalCluster:
    """Start, stop, kill and restart the nodes of one local cluster."""

    def __init__(self, layout: ClusterLayout):
        self.layout = layout
        self.root = Path(layout.data_dir).resolve()
        self.nodes: dict[str, NodeSpec] = {}
        self.procs: dict[str, subprocess.Popen] = {}

    # -- layout

    def _port(self, port: int) -> int:
        return port if port else free_port(self.layout.ip)

    def plan(self) -> None:
        lay, ip = self.layout, self.layout.ip
        if lay.masters > 1 and not lay.meta:
            raise ValueError("several masters share one PostgreSQL database: give --meta "
                             "postgresql://...")
        for k in range(lay.masters):
            self.add_master_spec(k)
        for i in range(lay.volumes):
            self.add_volume_spec(i)
        gp = self._port(lay.gateway_port)
        ghp = self._port(lay.gateway_http_port)
        gargs = ["gateway", "-ip", ip, "-p", str(gp), "--http-port", str(ghp), "-n", "g0",
                 "--master", self.master_addr, *self._tls_args()]
        self.nodes["g0"] = NodeSpec("gateway", "g0", gargs, f"{ip}:{gp}", f"{ip}:{ghp}")

    def add_master_spec(self, k: int) -> NodeSpec:
        """Master k: master_name for the first (its data dir "master", as always), m<k> on
        the first's ports + 10 * k for the others."""
        lay, ip = self.layout, self.layout.ip

        def port(base: int) -> int:
            return self._port(base + 10 * k if base else 0)

        mp, mgp, mzp = port(lay.master_port), port(lay.master_grpc_port), \
            port(lay.master_zmq_port)
        name = lay.master_name if k == 0 else f"m{k}"
        data = str(self.root / ("master" if k == 0 else f"master{k}"))
        margs = ["master", "-ip", ip, "-p", str(mp), "-gp", str(mgp), "-zp", str(mzp),
                 "-n", name, "--data", data]
        if lay.meta:
            margs += ["--meta", lay.meta]
        if lay.volume_size_limit:
            margs += ["--volume-size-limit", str(lay.volume_size_limit)]
        if lay.heartbeat_interval:
            margs += ["--heartbeat-interval", str(lay.heartbeat_interval)]
        margs += self._tls_args() + lay.extra_master_args
        spec = NodeSpec("master", name, margs, f"{ip}:{mgp}", f"{ip}:{mp}", data=data,
                        zmq_address=f"{ip}:{mzp}")
        self.nodes[name] = spec
        return spec

    def master_names(self) -> list[str]:
        return [n for n, s in self.nodes.items() if s.kind == "master"]

    def _tls_args(self) -> list[str]:
        return ["--tls-dir", self.layout.tls_dir] if self.layout.tls_dir else []

    @property
    def transport(self) -> Transport:
        """How tools and tests reach this cluster: as admin, with its credentials if any."""
        return Transport("admin", self.layout.tls_dir)

    def add_volume_spec(self, i: int) -> NodeSpec:
        lay, ip = self.layout, self.layout.ip
        vp = self._port(lay.volume_port + i if lay.volume_port else 0)
        vgp = self._port(lay.volume_grpc_port + i if lay.volume_grpc_port else 0)
        name = f"v{i}"
        vdir = str(self.root / name)
        vargs = ["volume", "-ip", ip, "-p", str(vp), "-gp", str(vgp), "-n", name,
                 "--master", self.master_addr, "--dir", vdir, *self._tls_args(),
                 *lay.extra_volume_args]
        spec = NodeSpec("volume", name, vargs, f"{ip}:{vgp}", f"{ip}:{vp}", data=vdir)
        self.nodes[name] = spec
        return spec

    @property
    def master_addr(self) -> str:
        """What clients are given: the master's gRPC address, or every master's, comma
        separated (they fail over along the list)."""
        return ",".join(self.nodes[n].grpc_address for n in self.master_names())

    @property
    def gateway_addr(self) -> str:
        return self.nodes["g0"].grpc_address

    def volume_names(self) -> list[str]:
        return [n for n, s in self.nodes.items() if s.kind == "volume"]

    # -- processes

    def start_node(self, name: str) -> NodeSpec:
        spec = self.nodes[name]
        log = spec.log_path(self.root)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "tools.cli", *spec.args],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=str(REPO_ROOT), env=env, start_new_session=True)
        self.procs[name] = proc
        spec.pid = proc.pid
        (self.root / "pids").mkdir(parents=True, exist_ok=True)
        (self.root / "pids" / f"{name}.pid").write_text(f"{proc.pid}\n")
        self.save()
        return spec

    def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.nodes:
            self.plan()
        for name in self.nodes:
            self.start_node(name)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0, volumes: list[str] | None = None) -> None:
        """Poll until the master serves and every running volume server and gateway is alive
        in its view; raise with the tail of the laggard's log otherwise."""
        deadline = time.monotonic() + timeout
        want_volumes = set(volumes if volumes is not None else
                           [n for n in self.volume_names() if self.running(n)])
        want_gateway = self.running("g0") if "g0" in self.nodes else False
        want_masters = [n for n in self.master_names() if self.running(n)]
        transport = self.transport
        masters = [MasterClient(self.nodes[n].grpc_address, timeout=2.0, retry_for=0,
                                transport=transport) for n in want_masters]
        volume_channels = transport.channel_factory("volume")
        waiting_for = "master"
        try:
            while time.monotonic() < deadline:
                for name, proc in self.procs.items():
                    if proc.poll() is not None and (name in want_volumes or
                                                    name in want_masters or
                                                    (name == "g0" and want_gateway)):
                        raise RuntimeError(f"node {name} exited with {proc.returncode}:\n"
                                           + self.log_tail(name))
                try:
                    views = [m.call("ClusterStatus", master_pb2.Empty(), retry=False)
                             for m in masters]
                except FsError:
                    time.sleep(0.1)
                    continue
                # Every master must see every volume server (each keeps its own topology),
                # and the gateway must be known to one of them; several need a leader.
                alive = set.intersection(*({s.name for s in st.servers if s.alive}
                                           for st in views)) if views else set()
                gw_alive = any(g.alive for st in views for g in st.gateways)
                missing = {n for n in want_volumes - alive}
                if len(views) > 1 and not views[0].leader:
                    missing.add("a leader among the masters")
                # The master may still count a just-restarted server alive from before its
                # restart: ask each one directly too.
                missing |= {n for n in want_volumes - missing
                            if not rpc.check_health(self.nodes[n].grpc_address, 0.5,
                                                    volume_channels)}
                if not missing and (gw_alive or not want_gateway):
                    return
                waiting_for = ", ".join(sorted(missing)) or "gateway g0"
                time.sleep(0.1)
        finally:
            for m in masters:
                m.close()
        name = waiting_for.split(",")[0].strip().split()[-1]
        raise RuntimeError(f"cluster not ready after {timeout:.0f}s: waiting for {waiting_for}\n"
                           + self.log_tail(name if name in self.nodes else self.layout.master_name))

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        if proc is not None:
            return proc.poll() is None
        spec = self.nodes.get(name)
        return bool(spec and spec.pid and pid_alive(spec.pid) and is_our_node(spec.pid))

    def signal(self, name: str, sig: int) -> None:
        spec = self.nodes[name]
        if spec.pid and pid_alive(spec.pid):
            with contextlib.suppress(ProcessLookupError):  # it exited since the check
                os.kill(spec.pid, sig)

    def kill(self, name: str) -> None:
        """SIGKILL a node and reap it."""
        self.signal(name, signal.SIGKILL)
        proc = self.procs.get(name)
        if proc is not None:
            proc.wait(timeout=10)

    def stop_node(self, name: str, timeout: float = 10.0) -> None:
        spec = self.nodes[name]
        proc = self.procs.get(name)
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        elif spec.pid and pid_alive(spec.pid) and is_our_node(spec.pid):
            try:
                os.kill(spec.pid, signal.SIGTERM)
                if not wait_pid_gone(spec.pid, timeout):
                    os.kill(spec.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it exited between the check and the signal
        pidfile = self.root / "pids" / f"{name}.pid"
        pidfile.unlink(missing_ok=True)

    def restart_node(self, name: str) -> None:
        if self.running(name):
            self.stop_node(name)
        self.start_node(name)

    def stop_order(self, name: str) -> int:
        """Gateway first (no new writes), then volumes, masters last."""
        return {"gateway": 0, "volume": 1, "master": 2}[self.nodes[name].kind]

    def stop(self) -> None:
        for name in sorted(self.nodes, key=self.stop_order):
            self.stop_node(name)
        self.save()

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            text = self.nodes[name].log_path(self.root).read_text(errors="replace")
        except (OSError, KeyError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- persistence for kelp status/down

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        state = {"layout": asdict(self.layout),
                 "nodes": {n: asdict(s) for n, s in self.nodes.items()}}
        tmp = self.root / "cluster.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.root / "cluster.json")

    @classmethod
    def load(cls, data_dir: str) -> LocalCluster:
        path = Path(data_dir).resolve() / "cluster.json"
        state = json.loads(path.read_text())
        cluster = cls(ClusterLayout(**state["layout"]))
        cluster.nodes = {n: NodeSpec(**s) for n, s in state["nodes"].items()}
        return cluster

