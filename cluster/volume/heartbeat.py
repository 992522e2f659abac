"""The volume server's link to the master: registration, then periodic heartbeats.

The master keeps the topology as soft state rebuilt from heartbeats, so this thread is how the
cluster learns which volumes live here and how much room is left. The server id the master
assigns at first registration is kept in `<dir>/server_id` and offered again on every
registration, so a restarted server (or a restarted master) keeps its identity.

The server must serve reads and writes while the master is unreachable: failures here are
logged once per outage and retried with a short backoff, never raised. One long-lived channel
is used for the whole life of the thread (gRPC reconnects it by itself, with its reconnect
backoff capped so a master that comes back is found within seconds).

Several masters (`--master a:1,b:2`, one namespace in PostgreSQL): every master keeps its own
topology from heartbeats, so each is registered with and heartbeaten on its own thread, with
its own channel, back-off and outage log. The server id is one (the masters share the
database that hands it out): while it is unknown, registrations take turns, so the second
master is offered the id the first gave.
"""
from __future__ import annotations

import errno
import logging
import os
import threading

import grpc

from cluster.common.errors import FsError
from cluster.common.masters import parse_masters
from cluster.common.retry import Backoff
from cluster.common.security import Transport
from cluster.volume.options import VolumeOptions
from cluster.volume.store import Store
from protos import master_pb2, master_pb2_grpc

log = logging.getLogger(__name__)

SERVER_ID_FILE = "server_id"
RPC_TIMEOUT_S = 5.0
DEFAULT_INTERVAL_S = 1.0
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0


def load_server_id(directory: str) -> int:
    """The id saved by an earlier registration, or 0 (= new server)."""
    try:
        with open(os.path.join(directory, SERVER_ID_FILE)) as fh:
            text = fh.read().strip()
    except FileNotFoundError:
        return 0
    if not text.isdigit() or not 0 < int(text) < 2**32:
        log.warning("ignoring malformed %s in %s: %r", SERVER_ID_FILE, directory, text[:40])
        return 0
    return int(text)


def save_server_id(directory: str, server_id: int) -> None:
    """Write the id atomically: a crash leaves either the old file or the new one."""
    path = os.path.join(directory, SERVER_ID_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{server_id}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Heartbeater:
    """Named background activity: register with every master, then heartbeat each until
    stop(). One thread (`_MasterLink`) per master, each with its own channel, back-off and
    outage log; the server id is shared (several masters keep it in one database)."""

    def __init__(self, opts: VolumeOptions, store: Store, grpc_address: str, http_address: str,
                 transport: Transport | None = None):
        self.opts = opts
        self.store = store
        self.grpc_address = grpc_address
        self.http_address = http_address
        self.server_id = load_server_id(opts.dir)
        try:
            self.masters = parse_masters(opts.master)
        except ValueError as e:   # one line at start (FsError is a start error), no traceback
            raise FsError(errno.EINVAL, f"--master: {e}") from None
        self.registered = threading.Event()   # set while a master knows us (tests wait on it)
        self._id_lock = threading.RLock()     # registration while the id is unknown; saving it
        self._state_lock = threading.Lock()
        transport = transport or Transport("volume")
        several = len(self.masters) > 1
        self.links = [_MasterLink(self, address, transport,
                                  f"heartbeat-{opts.name}" + (f"-{i}" if several else ""))
                      for i, address in enumerate(self.masters)]

    @property
    def heartbeats_sent(self) -> int:
        return sum(link.heartbeats_sent for link in self.links)

    @property
    def interval_s(self) -> float:
        return min(link.interval_s for link in self.links)

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        for link in self.links:
            link.start()

    def is_alive(self) -> bool:
        return any(link.is_alive() for link in self.links)

    def stop(self, timeout: float = 5.0) -> None:
        for link in self.links:
            link.stop_soon()
        for link in self.links:
            link.stop(timeout)

    def trigger(self) -> None:
        """Send a heartbeat now (e.g. a volume was allocated), not at the next tick."""
        for link in self.links:
            link.trigger()

    def _registered_changed(self) -> None:
        with self._state_lock:
            if any(link.registered for link in self.links):
                self.registered.set()
            else:
                self.registered.clear()

    def _register(self, stub, master: str) -> master_pb2.RegisterResponse:
        """Register with one master. While this server has no id yet, one registration at a
        time: the first master's answer is the id the others are offered."""
        unknown = self.server_id == 0
        if unknown:
            self._id_lock.acquire()
        try:
            reply = stub.RegisterVolumeServer(
                master_pb2.RegisterRequest(server_id=self.server_id, name=self.opts.name,
                                           grpc_address=self.grpc_address,
                                           http_address=self.http_address),
                timeout=RPC_TIMEOUT_S)
            if reply.server_id == 0:
                raise RuntimeError(f"master {master} answered server id 0")
            if reply.server_id != self.server_id:
                with self._id_lock:
                    if self.server_id:
                        log.warning("master %s replaced server id %d with %d", master,
                                    self.server_id, reply.server_id)
                    save_server_id(self.opts.dir, reply.server_id)
                    self.server_id = reply.server_id
        finally:
            if unknown:
                self._id_lock.release()
        self.store.set_size_limit(reply.volume_size_limit)
        log.info("registered with master %s as server %d", reply.master_name or master,
                 self.server_id)
        return reply

    def _heartbeat(self) -> master_pb2.Heartbeat:
        free, total = self.store.disk()
        volumes = []
        for vol in self.store.volumes():
            s = vol.stats()
            volumes.append(master_pb2.VolumeInfo(
                volume_id=s.volume_id, replication=s.replication, size=s.size,
                file_count=s.file_count, deleted_bytes=s.deleted_bytes,
                read_only=s.read_only, compact_revision=s.compact_revision))
        return master_pb2.Heartbeat(
            server_id=self.server_id, grpc_address=self.grpc_address,
            http_address=self.http_address, name=self.opts.name, volumes=volumes,
            free_bytes=free, total_bytes=total, max_volumes=self.opts.max_volumes)


class _MasterLink(threading.Thread):
    """The heartbeats to one master: register, then heartbeat every interval; failures are
    logged once per outage and retried with a back-off of this link's own."""

    def __init__(self, beater: Heartbeater, address: str, transport: Transport, name: str):
        super().__init__(name=name, daemon=True)
        self.beater = beater
        self.address = address
        self.interval_s = DEFAULT_INTERVAL_S
        self.registered = False
        self.heartbeats_sent = 0
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        # The channel caps gRPC's reconnect backoff near ours (rpc.CHANNEL_OPTIONS), so
        # heartbeats resume within a second of the master coming back.
        self._channel = transport.channel(address, "master")
        self._stub = master_pb2_grpc.MasterStub(self._channel)
        self._in_outage = False

    def stop_soon(self) -> None:
        self._stop_event.set()
        self._wake.set()
        self._channel.close()   # cancels an RPC in flight, so stop does not wait for its timeout

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_soon()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def trigger(self) -> None:
        self._wake.set()

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _set_registered(self, value: bool) -> None:
        if self.registered != value:
            self.registered = value
            self.beater._registered_changed()

    def run(self) -> None:
        backoff = Backoff(BACKOFF_MIN_S, BACKOFF_MAX_S)
        while not self._stop_event.is_set():
            try:
                fresh = False
                if not self.registered:
                    reply = self.beater._register(self._stub, self.address)
                    if reply.heartbeat_interval_ms:
                        self.interval_s = reply.heartbeat_interval_ms / 1000.0
                    self._set_registered(True)
                    fresh = True
                answer = self._stub.SendHeartbeat(self.beater._heartbeat(),
                                                  timeout=RPC_TIMEOUT_S)
                self.heartbeats_sent += 1
                if self._in_outage:
                    log.info("master %s reachable again", self.address)
                    self._in_outage = False
                if answer.reregister:
                    log.info("master %s asks server %d to register again",
                             self.address, self.beater.server_id)
                    self._set_registered(False)
                    if fresh:   # it forgot us right after registering: do not spin
                        self._sleep(backoff.next())
                    continue
                backoff.reset()
                self._sleep(self.interval_s)
            except grpc.RpcError as e:
                self._set_registered(False)
                if self._stop_event.is_set():
                    break
                if not self._in_outage:
                    code = e.code() if hasattr(e, "code") else None
                    log.warning("master %s unreachable (%s); serving on, retrying",
                                self.address, code.name if code else e)
                    self._in_outage = True
                self._sleep(backoff.next())
            except Exception:
                if self._stop_event.is_set():
                    break   # e.g. "closed channel" raised by stop() racing a round
                log.exception("heartbeat round to master %s failed", self.address)
                self._sleep(backoff.next())
