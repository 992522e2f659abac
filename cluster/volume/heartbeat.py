"""The volume server's link to the master: registration, then periodic heartbeats.

The master keeps the topology as soft state rebuilt from heartbeats, so this thread is how the
cluster learns which volumes live here and how much room is left. The server id the master
assigns at first registration is kept in `<dir>/server_id` and offered again on every
registration, so a restarted server (or a restarted master) keeps its identity.

The server must serve reads and writes while the master is unreachable: failures here are
logged once per outage and retried with a short backoff, never raised. One long-lived channel
is used for the whole life of the thread (gRPC reconnects it by itself, with its reconnect
backoff capped so a master that comes back is found within seconds).
"""
from __future__ import annotations

import logging
import os
import threading

import grpc

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


class Heartbeater(threading.Thread):
    """Named background activity: register with the master, then heartbeat until stop()."""

    def __init__(self, opts: VolumeOptions, store: Store, grpc_address: str, http_address: str,
                 transport: Transport | None = None):
        super().__init__(name=f"heartbeat-{opts.name}", daemon=True)
        self.opts = opts
        self.store = store
        self.grpc_address = grpc_address
        self.http_address = http_address
        self.server_id = load_server_id(opts.dir)
        self.interval_s = DEFAULT_INTERVAL_S
        self.registered = threading.Event()   # set while the master knows us (tests wait on it)
        self.heartbeats_sent = 0
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        # The channel caps gRPC's reconnect backoff near ours (rpc.CHANNEL_OPTIONS), so
        # heartbeats resume within a second of the master coming back.
        self._channel = (transport or Transport("volume")).channel(opts.master, "master")
        self._stub = master_pb2_grpc.MasterStub(self._channel)
        self._in_outage = False

    # ---------------------------------------------------------------- control

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self._wake.set()
        self._channel.close()   # cancels an RPC in flight, so stop does not wait for its timeout
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def trigger(self) -> None:
        """Send a heartbeat now (e.g. a volume was allocated), not at the next tick."""
        self._wake.set()

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    # ---------------------------------------------------------------- loop

    def run(self) -> None:
        backoff = Backoff(BACKOFF_MIN_S, BACKOFF_MAX_S)
        while not self._stop_event.is_set():
            try:
                fresh = False
                if not self.registered.is_set():
                    self._register()
                    fresh = True
                reply = self._stub.SendHeartbeat(self._heartbeat(), timeout=RPC_TIMEOUT_S)
                self.heartbeats_sent += 1
                if self._in_outage:
                    log.info("master %s reachable again", self.opts.master)
                    self._in_outage = False
                if reply.reregister:
                    log.info("master %s asks server %d to register again",
                             self.opts.master, self.server_id)
                    self.registered.clear()
                    if fresh:   # it forgot us right after registering: do not spin
                        self._sleep(backoff.next())
                    continue
                backoff.reset()
                self._sleep(self.interval_s)
            except grpc.RpcError as e:
                self.registered.clear()
                if self._stop_event.is_set():
                    break
                if not self._in_outage:
                    code = e.code() if hasattr(e, "code") else None
                    log.warning("master %s unreachable (%s); serving on, retrying",
                                self.opts.master, code.name if code else e)
                    self._in_outage = True
                self._sleep(backoff.next())
            except Exception:
                if self._stop_event.is_set():
                    break   # e.g. "closed channel" raised by stop() racing a round
                log.exception("heartbeat round failed")
                self._sleep(backoff.next())

    def _register(self) -> None:
        reply = self._stub.RegisterVolumeServer(
            master_pb2.RegisterRequest(server_id=self.server_id, name=self.opts.name,
                                       grpc_address=self.grpc_address,
                                       http_address=self.http_address),
            timeout=RPC_TIMEOUT_S)
        if reply.server_id == 0:
            raise RuntimeError(f"master {self.opts.master} answered server id 0")
        if reply.server_id != self.server_id:
            if self.server_id:
                log.warning("master replaced server id %d with %d", self.server_id, reply.server_id)
            save_server_id(self.opts.dir, reply.server_id)
            self.server_id = reply.server_id
        if reply.heartbeat_interval_ms:
            self.interval_s = reply.heartbeat_interval_ms / 1000.0
        self.store.set_size_limit(reply.volume_size_limit)
        self.registered.set()
        log.info("registered with master %s as server %d", reply.master_name or self.opts.master,
                 self.server_id)

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
