"""Several hosts on one machine, for tests that need a real network between KelpFS nodes.

Each host is a Linux network namespace with one interface, joined by a veth pair to a single
bridge. The bridge lives in a "switch" namespace of its own, so the root namespace's network
is never touched: no interface, route or address is added there, and no packet of a test
leaves the switch. A fault is then a network fault, not a process one: `Host.cut()` takes the
host's port on the switch down (its TCP connections stay open and simply stop hearing back,
as when a cable is pulled), `Network.partition(a, b)` makes two hosts lose each other's
frames while both still reach everyone else.

Processes run in a host's namespace through `nsenter --net=...`, which changes the network
namespace only: a FUSE mount a process makes there is in the test's mount namespace, so the
test reads and writes it directly (`ip netns exec` would give the mount a namespace of its
own, invisible to the test).

Everything a `Network` makes it also removes, in `close()`: mounts are unmounted, every
process it started is stopped by its pid, every veth, the bridge and every namespace is
deleted, whatever the test did. Tests get one through `network_for(request, tmp_path)`, which
skips with the reason when this machine cannot make namespaces (not root, no `ip` or
`nsenter`, or the kernel refuses the first one), and registers `close()` as a finalizer.

Nodes: `start_master(host, *flags)`, `start_volume(host, master_address, *flags)`,
`start_gateway(...)`, `mount(host, master_address, mountpoint, *flags)`, or `start_cluster`
for the usual one-master shape. Each host has a port space of its own, so every node takes
its default ports, and several masters on several hosts need nothing special.

Code that must talk to the cluster from a namespace (readiness, which server holds which
needle) runs as `python -m tests.netns probe ...` inside that namespace: a gRPC client in the
test process would open its sockets in the root namespace, which reaches no host.
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tools.mounts import unmount

REPO_ROOT = Path(__file__).resolve().parent.parent
NETNS_DIR = Path("/run/netns")
PREFIX = "kelpnet"
# Where subnets are taken from: one /24 of 10.77.0.0/16 that nothing in the root namespace
# routes to, so an address in a log can never be mistaken for a real host's.
POOL = ipaddress.ip_network("10.77.0.0/16")
# Ports every node uses in its own namespace: each host has a port space of its own, so no
# free-port search (and no race with other processes of the machine) is needed.
MASTER_PORTS = {"http": 9333, "grpc": 19333, "zmq": 19334}
VOLUME_PORTS = {"http": 8080, "grpc": 18080}
GATEWAY_PORTS = {"zmq": 7000, "http": 7001}
P = TypeVar("P", bound="Proc")


class NamespacesUnavailable(RuntimeError):
    """The first namespace could not be made (no CAP_SYS_ADMIN, no netns support)."""


def unavailable_reason() -> str | None:
    """Why this machine cannot run multi-host tests, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2 / util-linux)"
    return None


def run(argv: Sequence[str], check: bool = True, timeout: float = 30,
        **kw) -> subprocess.CompletedProcess:
    """A short command; its output captured as text, its failure an error naming it."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): "
                           f"{result.stderr.strip() or result.stdout.strip()}")
    return result


def python_env() -> dict[str, str]:
    """The environment of every Python process started here: this checkout's code first, so a
    worktree's tests run the worktree's nodes whatever is installed in the venv."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    return env


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace has an address in or a route to (read only):
    each word of `ip addr` and `ip route` that parses as an address or a network."""
    found = []
    for cmd in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        for word in run(cmd, check=False).stdout.split():
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(word, strict=False)
                if net.version == 4 and net.prefixlen > 0:   # the default route claims nothing
                    found.append(net)
    return found


def pick_subnet() -> ipaddress.IPv4Network:
    """A random /24 of POOL that overlaps nothing the root namespace uses."""
    used = used_networks()
    free = [s for s in POOL.subnets(new_prefix=24) if not any(s.overlaps(u) for u in used)]
    if not free:
        raise RuntimeError(f"no /24 of {POOL} is free in the root namespace")
    return free[secrets.randbelow(len(free))]


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    """A process started in a host's namespace, with its log."""
    name: str
    host: Host
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; reaped either way."""
        self.terminate()
        self.reap(timeout)

    def terminate(self) -> None:
        """Ask it to end (SIGTERM), without waiting: a network stops many at once."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()

    def reap(self, timeout: float = 10.0) -> None:
        """Wait for it to exit; SIGKILL past `timeout`."""
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Node(Proc):
    """A KelpFS node: its kind and the addresses it serves."""
    kind: str = ""
    addresses: dict[str, str] = field(default_factory=dict)   # "grpc", "zmq", "http"
    data: Path | None = None

    @property
    def grpc(self) -> str:
        return self.addresses["grpc"]

    @property
    def zmq(self) -> str:
        return self.addresses["zmq"]


@dataclass
class MountProc(Proc):
    """A FUSE mount whose process runs in a host's namespace; the mount point is the test's."""
    mountpoint: Path = Path()

    def terminate(self) -> None:
        """Unmount, which ends the mount's process; SIGTERM only if the unmount failed."""
        if not unmount(self.mountpoint):
            super().terminate()


# ---------------------------------------------------------------- hosts and the network


class Host:
    """One namespace: `name` (h0, h1 ...), `ip`, and the switch port that connects it."""

    def __init__(self, network: Network, index: int, ip: str):
        self.network = network
        self.name = f"h{index}"
        self.ns = f"{network.prefix}-{self.name}"
        self.ip = ip
        self.port = f"p{index}"            # the bridge side of its veth, in the switch
        self.is_cut = False
        self.ports_taken: set[int] = set()

    def __repr__(self) -> str:
        return f"Host({self.name} {self.ip})"

    def nsenter(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", f"--net={NETNS_DIR / self.ns}", "--", *argv]

    def spawn(self, argv: Sequence[str], name: str, **kw) -> tuple[subprocess.Popen, Path]:
        """Start `argv` in this namespace, its output in the network's log dir, in a session
        of its own (a ^C to pytest reaches the test, which stops it; not the process)."""
        log = self.network.logs / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        kw.setdefault("env", python_env())
        kw.setdefault("cwd", str(REPO_ROOT))
        with open(log, "ab") as out:
            popen = subprocess.Popen(self.nsenter(argv), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        return popen, log

    def popen(self, argv: Sequence[str], name: str = "", **kw) -> Proc:
        """Start `argv` in this namespace (nsenter execs it: the pid is the program's); the
        network stops it at close()."""
        name = name or f"{self.name}-{Path(argv[0]).name}-{len(self.network.procs)}"
        return self.network.adopt(Proc(name, self, *self.spawn(argv, name, **kw)))

    def run(self, argv: Sequence[str], timeout: float = 60, check: bool = False,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run `argv` in this namespace to its end; output captured as bytes."""
        result = subprocess.run(self.nsenter(argv), capture_output=True, timeout=timeout,
                                env=python_env(), cwd=str(REPO_ROOT), input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} on {self.name} failed "
                                 f"({result.returncode}):\n{result.stdout.decode()}\n"
                                 f"{result.stderr.decode()}")
        return result

    def python(self, *args: str, timeout: float = 60, check: bool = False):
        return self.run([sys.executable, *args], timeout=timeout, check=check)

    def take_port(self, preferred: int) -> int:
        """`preferred`, or the next port no node of this host was given yet."""
        port = preferred
        while port in self.ports_taken:
            port += 1
        self.ports_taken.add(port)
        return port

    def cut(self) -> None:
        """Pull this host's cable: its switch port goes down, nothing reaches it or leaves it.
        Its own interface stays up, so its processes see silence, not an error."""
        self.network.switch_ip("link", "set", self.port, "down")
        self.is_cut = True
        self.network.event(f"{self.name} ({self.ip}) cut")

    def restore(self) -> None:
        self.network.switch_ip("link", "set", self.port, "up")
        self.is_cut = False
        self.network.event(f"{self.name} ({self.ip}) restored")


class Network:
    """N hosts on one bridge. Use as a context manager, or through `network_for`."""

    def __init__(self, root: Path, hosts: int = 4):
        if hosts < 1 or hosts > 250:
            raise ValueError("1..250 hosts")
        self.root = Path(root)
        self.logs = self.root / "logs"
        self.count = hosts
        # pid and a random suffix: parallel runs (and a run's leftovers) never collide.
        self.prefix = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.switch = f"{self.prefix}-sw"
        self.subnet: ipaddress.IPv4Network | None = None
        self.hosts: list[Host] = []
        self.procs: list[Proc] = []
        self.made: list[str] = []           # namespaces created, for close()
        self.partitions: set[tuple[str, str]] = set()
        self.tls_dir = self.root / "tls"

    # -- set-up

    def __enter__(self) -> Network:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def event(self, what: str) -> None:
        """Note a fault in logs/events.log, timestamped as the nodes' logs are, so a reader
        can line the nodes' reactions up with it."""
        self.logs.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S") + f",{int(time.time() * 1000) % 1000:03d}"
        with open(self.logs / "events.log", "a") as fh:
            fh.write(f"{stamp} {what}\n")

    def switch_ip(self, *args: str) -> None:
        run(["ip", "-n", self.switch, *args])

    def add_namespace(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.made.append(name)
        # IPv4 only: no IPv6 router solicitations or multicast reports on the bridge.
        for key in ("all", "default"):
            run(["nsenter", f"--net={NETNS_DIR / name}", "--", "sysctl", "-q", "-w",
                 f"net.ipv6.conf.{key}.disable_ipv6=1"], check=False)
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def build(self) -> None:
        self.subnet = pick_subnet()
        addresses = list(self.subnet.hosts())
        try:
            self.add_namespace(self.switch)
        except RuntimeError as e:   # the first one: this machine does not let us
            raise NamespacesUnavailable(str(e)) from None
        self.switch_ip("link", "add", "br0", "type", "bridge")
        self.switch_ip("link", "set", "br0", "up")
        for i in range(self.count):
            host = Host(self, i, str(addresses[i]))
            self.add_namespace(host.ns)
            # Both ends are made in the switch; one moves to the host and is renamed eth0 there,
            # so no interface ever appears in the root namespace.
            self.switch_ip("link", "add", host.port, "type", "veth", "peer", "name",
                           f"e{i}", "netns", host.ns)
            self.switch_ip("link", "set", host.port, "master", "br0")
            self.switch_ip("link", "set", host.port, "up")
            run(["ip", "-n", host.ns, "link", "set", f"e{i}", "name", "eth0"])
            run(["ip", "-n", host.ns, "addr", "add",
                 f"{host.ip}/{self.subnet.prefixlen}", "dev", "eth0"])
            run(["ip", "-n", host.ns, "link", "set", "eth0", "up"])
            self.hosts.append(host)

    def make_certs(self) -> Path:
        """The cluster's credentials (`kelp certs`), valid for every host's address and
        loopback: every node and mount then runs the secure configuration."""
        hosts = [a for h in self.hosts for a in ("--host", h.ip)]
        run([sys.executable, "-m", "tools.cli", "certs", str(self.tls_dir), *hosts,
             "--host", "127.0.0.1"], env=python_env(), cwd=str(REPO_ROOT), timeout=60)
        return self.tls_dir

    # -- faults between two hosts

    def partition(self, a: Host, b: Host) -> None:
        """a and b lose each other's frames (each sends to a MAC nobody has), silently, as a
        broken link between them would; each still reaches every other host."""
        for src, dst in ((a, b), (b, a)):
            run(["ip", "-n", src.ns, "neigh", "replace", dst.ip, "lladdr",
                 "02:00:00:00:00:01", "nud", "permanent", "dev", "eth0"])
        self.partitions.add((a.name, b.name))
        self.event(f"{a.name} and {b.name} partitioned")

    def heal(self, a: Host, b: Host) -> None:
        for src, dst in ((a, b), (b, a)):
            run(["ip", "-n", src.ns, "neigh", "del", dst.ip, "dev", "eth0"], check=False)
        self.partitions.discard((a.name, b.name))
        self.event(f"{a.name} and {b.name} healed")

    # -- KelpFS nodes

    def adopt(self, proc: P) -> P:
        """Remember a process for close()."""
        self.procs.append(proc)
        return proc

    def _node(self, host: Host, kind: str, name: str, args: list[str],
              addresses: dict[str, str], data: Path | None) -> Node:
        popen, log = host.spawn([sys.executable, "-m", "tools.cli", kind, *args], name)
        return self.adopt(Node(name, host, popen, log, kind=kind, addresses=addresses,
                               data=data))

    def count_kind(self, kind: str) -> int:
        return sum(isinstance(p, Node) and p.kind == kind for p in self.procs)

    def tls_args(self) -> list[str]:
        if not self.tls_dir.exists():
            self.make_certs()
        return ["--tls-dir", str(self.tls_dir)]

    def start_master(self, host: Host, *extra: str, name: str = "") -> Node:
        """A master on `host` with a data dir of its own: m0, m1 ... unless named. Several
        may run, each on its host (or on one host: the ports then count up)."""
        name = name or f"m{self.count_kind('master')}"
        ports = {k: host.take_port(p) for k, p in MASTER_PORTS.items()}
        data = self.root / name
        args = ["-ip", host.ip, "-p", str(ports["http"]), "-gp", str(ports["grpc"]),
                "-zp", str(ports["zmq"]), "-n", name, "--data", str(data), *self.tls_args(),
                *extra]
        return self._node(host, "master", name, args,
                          {k: f"{host.ip}:{p}" for k, p in ports.items()}, data)

    def start_volume(self, host: Host, master: str, *extra: str, name: str = "") -> Node:
        name = name or f"v-{host.name}"
        ports = {k: host.take_port(p) for k, p in VOLUME_PORTS.items()}
        data = self.root / name
        args = ["-ip", host.ip, "-p", str(ports["http"]), "-gp", str(ports["grpc"]),
                "-n", name, "--master", master, "--dir", str(data), *self.tls_args(), *extra]
        return self._node(host, "volume", name, args,
                          {k: f"{host.ip}:{p}" for k, p in ports.items()}, data)

    def start_gateway(self, host: Host, master: str, *extra: str, name: str = "") -> Node:
        name = name or f"g{self.count_kind('gateway')}"
        ports = {k: host.take_port(p) for k, p in GATEWAY_PORTS.items()}
        args = ["-ip", host.ip, "-p", str(ports["zmq"]), "--http-port", str(ports["http"]),
                "-n", name, "--master", master, *self.tls_args(), *extra]
        return self._node(host, "gateway", name, args,
                          {k: f"{host.ip}:{p}" for k, p in ports.items()}, None)

    def start_cluster(self, master: Host, volumes: Sequence[Host], gateway: Host,
                      master_args: Sequence[str] = (), volume_args: Sequence[str] = (),
                      timeout: float = 40.0) -> Cluster:
        """The usual shape: one master, a volume server on each of `volumes`, one gateway;
        returns once the master counts them all alive. Heartbeats every 0.5 s (unless
        master_args says otherwise), so a cut host is noticed within seconds."""
        m = self.start_master(master, "--heartbeat-interval", "0.5", *master_args)
        vols = [self.start_volume(h, m.grpc, *volume_args) for h in volumes]
        g = self.start_gateway(gateway, m.grpc)
        self.wait_ready(m, [v.name for v in vols], gateways=1, timeout=timeout)
        return Cluster(self, m, vols, g)

    def mount(self, host: Host, master: str, mountpoint: Path, *extra: str,
              timeout: float = 30.0) -> MountProc:
        """`python mount.py` in `host`'s namespace, in the foreground; returns once the
        kernel shows the mount (in the test's mount namespace too)."""
        mountpoint = Path(mountpoint)
        mountpoint.mkdir(parents=True, exist_ok=True)
        name = f"mount-{host.name}-{mountpoint.name}"
        popen, log = host.spawn([sys.executable, str(REPO_ROOT / "mount.py"), str(mountpoint),
                                 "--master", master, *self.tls_args(), *extra], name)
        mount = self.adopt(MountProc(name, host, popen, log, mountpoint=mountpoint))
        deadline = time.monotonic() + timeout
        while not os.path.ismount(mountpoint):
            if not mount.running() or time.monotonic() > deadline:
                mount.stop()
                raise AssertionError(f"mount on {host.name} did not come up:\n"
                                     f"{mount.log_tail()}")
            time.sleep(0.05)
        return mount

    def kelp(self, host: Host, *args: str, timeout: float = 120,
             check: bool = False) -> subprocess.CompletedProcess:
        """The `kelp` CLI on `host` with the cluster's admin credentials."""
        return host.python("-m", "tools.cli", *args, *self.tls_args(), timeout=timeout,
                           check=check)

    def probe(self, host: Host, *args: str, timeout: float = 60):
        """`python -m tests.netns probe ARGS` on `host`; its JSON answer."""
        result = host.python("-m", "tests.netns", "probe", *self.tls_args(), *args,
                             timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"probe {' '.join(args)} on {host.name} failed:\n"
                                 f"{result.stderr.decode()}")
        return json.loads(result.stdout)

    def wait_ready(self, master: Node, volumes: Sequence[str] = (), gateways: int = 0,
                   timeout: float = 40.0) -> None:
        """Until `master` serves and counts the named volume servers and `gateways` gateways
        alive; with the tails of the logs of the nodes that exited otherwise."""
        try:
            self.probe(master.host, "ready", "--master", master.grpc,
                       "--volumes", ",".join(volumes), "--gateways", str(gateways),
                       "--timeout", str(timeout), timeout=timeout + 30)
        except AssertionError as e:
            dead = [p for p in self.procs if isinstance(p, Node) and not p.running()]
            raise AssertionError(f"{e}\n" + "\n".join(
                f"--- {p.name} exited {p.popen.returncode}:\n{p.log_tail()}"
                for p in dead)) from None

    def reaches(self, src: Host, dst: Host) -> bool:
        """Whether the faults made so far let `src` talk to `dst`."""
        if src is dst:
            return True
        return not (src.is_cut or dst.is_cut or (src.name, dst.name) in self.partitions
                    or (dst.name, src.name) in self.partitions)

    def holdings(self, host: Host, addresses: Sequence[str], master: Node | None = None,
                 path: str = "") -> dict:
        """One probe on `host`: the live needles of the volume servers at `addresses`
        ({address: {vid: {key: [cookie, size, crc]}}}) and, given `master` and `path`, the
        chunk list of that remote file (a list of dicts, or None)."""
        args = [a for address in addresses for a in ("--address", address)]
        if master is not None:
            args += ["--master", master.grpc, "--path", path]
        raw = self.probe(host, "holdings", *args)
        raw["needles"] = {address: {int(v): {int(k): n for k, n in keys.items()}
                                    for v, keys in needles.items()}
                          for address, needles in raw["needles"].items()}
        return raw

    def needles(self, volume: Node) -> dict[int, dict[int, list[int]]]:
        """A volume server's live needles {vid: {key: [cookie, size, crc]}}, asked from its own
        namespace, so this works while its host is cut off."""
        return self.holdings(volume.host, [volume.grpc])["needles"][volume.grpc]

    def replicas(self, host: Host, master: Node, path: str,
                 volumes: Sequence[Node]) -> list[tuple[str, set[str]]]:
        """For each chunk of `path`: (fid, names of the servers among `volumes` that hold
        that needle with the size and CRC the master recorded), read from each server's
        disk. Servers `host` reaches are asked in one probe from there; each one cut off is
        asked from inside its own namespace."""
        near = [v for v in volumes if self.reaches(host, v.host)]
        found = self.holdings(host, [v.grpc for v in near], master, path)
        held = {v.name: found["needles"][v.grpc] for v in near}
        held.update({v.name: self.needles(v) for v in volumes if v not in near})
        out = []
        for c in found["chunks"]:
            holders = {name for name, needles in held.items()
                       if (n := needles.get(c["volume_id"], {}).get(c["key"])) is not None
                       and n[1] == c["needle_size"] and n[2] == c["crc32c"]}
            out.append((c["fid"], holders))
        return out

    # -- teardown

    def dump_logs(self, lines: int = 40) -> None:
        with contextlib.suppress(OSError):
            sys.stderr.write(f"\n----- events -----\n{(self.logs / 'events.log').read_text()}")
        for proc in self.procs:
            sys.stderr.write(f"\n----- {proc.name} on {proc.host.name} (pid {proc.pid}) -----\n"
                             f"{proc.log_tail(lines)}\n")

    def close(self) -> None:
        """Unmount, stop every process by pid (mounts first, then gateways, volumes, masters),
        delete every veth, the bridge and every namespace this network made."""
        for rank in sorted({stop_rank(p) for p in self.procs}):
            group = [p for p in self.procs if stop_rank(p) == rank]
            for proc in group:
                with contextlib.suppress(Exception):
                    proc.terminate()
            for proc in group:
                with contextlib.suppress(Exception):
                    proc.reap()
        for proc in self.procs:   # the last word: nothing this network started outlives it
            with contextlib.suppress(Exception):
                proc.kill()
            if isinstance(proc, MountProc):
                unmount(proc.mountpoint)
        for host in self.hosts:
            run(["ip", "-n", self.switch, "link", "del", host.port], check=False)
        if self.switch in self.made:
            run(["ip", "-n", self.switch, "link", "del", "br0"], check=False)
        for name in reversed(self.made):
            run(["ip", "netns", "del", name], check=False)
        self.made = [n for n in self.made if (NETNS_DIR / n).exists()]
        if self.made:
            raise RuntimeError(f"namespaces left behind: {self.made}")


@dataclass
class Cluster:
    """What `Network.start_cluster` started."""
    network: Network
    master: Node
    volumes: list[Node]
    gateway: Node

    def volume_on(self, host: Host) -> Node:
        return next(v for v in self.volumes if v.host is host)

    def kelp(self, *args: str, host: Host | None = None, **kw) -> subprocess.CompletedProcess:
        """`kelp ARGS --master <this master>` from `host` (the master's by default)."""
        return self.network.kelp(host or self.master.host, *args, "--master", self.master.grpc,
                                 **kw)

    def replicas(self, path: str) -> list[tuple[str, set[str]]]:
        """Network.replicas of remote `path` over this cluster's volume servers."""
        return self.network.replicas(self.master.host, self.master, path, self.volumes)

    def alive(self, timeout: float = 40.0) -> None:
        """Until the master counts every volume server and the gateway alive again."""
        self.network.wait_ready(self.master, [v.name for v in self.volumes], gateways=1,
                                timeout=timeout)


def stop_rank(proc: Proc) -> int:
    """Mounts first (they hold the kernel), then what serves them: gateways, volume servers,
    masters last, so no node spends its last seconds retrying a peer already gone."""
    if isinstance(proc, MountProc):
        return 0
    return {"gateway": 1, "volume": 2, "master": 3}.get(getattr(proc, "kind", ""), 1)


def network_for(request, tmp_path: Path, hosts: int = 4) -> Network:
    """A built Network for one test, closed by a finalizer (the logs of its processes printed
    first when the test failed); skips the test when namespaces cannot be made here."""
    import pytest
    reason = unavailable_reason()
    if reason and os.environ.get("KELP_REQUIRE_NETNS") == "1":
        pytest.fail(f"multi-host tests: {reason}, and KELP_REQUIRE_NETNS=1")
    if reason:
        pytest.skip(f"multi-host tests: {reason}")
    network = Network(tmp_path / "net", hosts)
    try:
        network.build()
    except NamespacesUnavailable as e:
        network.close()
        pytest.skip(f"multi-host tests: cannot make network namespaces here: {e}")
    except BaseException:
        network.close()   # a fault of the harness itself: an error, not a skip
        raise

    def finish():
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            network.dump_logs()
        network.close()

    request.addfinalizer(finish)
    return network


# ---------------------------------------------------------------- probes, run in a namespace


def _probe_ready(args, transport) -> dict:
    from cluster.common.errors import FsError
    from fusefs.master_client import MasterClient
    from protos import master_pb2
    want = {v for v in args.volumes.split(",") if v}
    master = MasterClient(args.master, timeout=2.0, retry_for=0, transport=transport)
    deadline = time.monotonic() + args.timeout
    missing: object = "the master"
    try:
        while time.monotonic() < deadline:
            try:
                st = master.call("ClusterStatus", master_pb2.Empty(), retry=False)
            except FsError as e:
                missing = f"the master ({e})"
                time.sleep(0.1)
                continue
            alive = {s.name for s in st.servers if s.alive}
            gateways = sum(g.alive for g in st.gateways)
            missing = sorted(want - alive) or (gateways < args.gateways and "gateways")
            if not missing:
                return {"alive": sorted(alive), "gateways": gateways}
            time.sleep(0.1)
    finally:
        master.close()
    raise SystemExit(f"not ready after {args.timeout}s: waiting for {missing}")


def _probe_holdings(args, transport) -> dict:
    from tests.harness import volume_needles
    needles = {a: volume_needles(a, transport=transport) for a in args.address}
    chunks = _chunks(args.master, args.path, transport) if args.master else None
    return {"needles": needles, "chunks": chunks}


def _chunks(master: str, path: str, transport) -> list[dict]:
    from cluster.common.fid import Fid
    from fusefs.client import KelpClient
    client = KelpClient(master, transport=transport)
    try:
        info = client.chunks(client.stat(path).ino)
        return [{"fid": c.fid, "volume_id": Fid.parse(c.fid).volume_id,
                 "key": Fid.parse(c.fid).key, "needle_size": c.needle_size,
                 "crc32c": c.crc32c, "length": c.length} for c in info.chunks]
    finally:
        client.close()


def probe_main(argv: Sequence[str] | None = None) -> int:
    """Questions the tests ask the cluster from inside a namespace; answers JSON on stdout."""
    from cluster.common.security import Transport
    parser = argparse.ArgumentParser(prog="python -m tests.netns probe")
    parser.add_argument("--tls-dir", required=True)
    sub = parser.add_subparsers(dest="what", required=True)
    ready = sub.add_parser("ready")
    ready.add_argument("--master", required=True)
    ready.add_argument("--volumes", default="")
    ready.add_argument("--gateways", type=int, default=0)
    ready.add_argument("--timeout", type=float, default=40)
    holdings = sub.add_parser("holdings")
    holdings.add_argument("--address", action="append", default=[])
    holdings.add_argument("--master", default="")
    holdings.add_argument("--path", default="/")
    args = parser.parse_args(argv)
    what = {"ready": _probe_ready, "holdings": _probe_holdings}
    answer = what[args.what](args, Transport("admin", args.tls_dir))
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["probe"]:
        sys.exit("usage: python -m tests.netns probe ...")
    sys.exit(probe_main(sys.argv[2:]))
