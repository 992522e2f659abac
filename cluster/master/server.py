"""The master node: the gRPC Master service over the metadata store, topology, assigner and
reaper, plus its HTTP /status and /metrics endpoint.

`MasterServicer` is transport only, in three halves with a module each (namespace_rpc.py,
topology_rpc.py, admin_rpc.py): it decodes a request, calls the store / Namespace / topology /
assigner, encodes the answer; FsError becomes a status code through rpc.servicer_method (so a
bad path is INVALID_ARGUMENT, a missing one NOT_FOUND "ENOENT: /a"). `MasterNode` wires the
pieces from MasterOptions (with the mounts' ZMQ mutation channel, mutation_server.py) and owns
their lifetimes; `main` runs one until SIGINT/SIGTERM.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import threading
import time

import grpc

from cluster.common import rpc
from cluster.common.config import ConfigError
from cluster.common.errors import FsError, fserror_from_rpc
from cluster.common.httpstatus import StatusServer
from cluster.common.node import run_node
from cluster.common.replication import check_replication
from cluster.common.security import Transport
from cluster.master import exports, metrics, schema, sequencer
from cluster.master.admin_rpc import AdminRpc
from cluster.master.assign import Assigner
from cluster.master.callbacks import CallbackTable
from cluster.master.keyclock import KeyClock
from cluster.master.mutation_server import MutationServer
from cluster.master.namespace import Namespace
from cluster.master.namespace_rpc import NamespaceRpc
from cluster.master.options import MasterOptions
from cluster.master.peers import PeerLink
from cluster.master.reaper import Reaper
from cluster.master.schema import SchemaError
from cluster.master.sessions import SessionTable
from cluster.master.sqlite_store import SQLiteStore
from cluster.master.store import MetadataStore
from cluster.master.topology import ServerState, Topology
from cluster.master.topology_rpc import TopologyRpc
from cluster.master.vacuum import Vacuumer
from protos import master_pb2_grpc, volume_pb2

log = logging.getLogger(__name__)

ALLOCATE_TIMEOUT_S = 5.0


class MasterServicer(NamespaceRpc, TopologyRpc, AdminRpc, master_pb2_grpc.MasterServicer):
    """The Master gRPC service: its namespace, topology and admin halves live in their own
    modules; this holds what they share."""

    def __init__(self, store: MetadataStore, topology: Topology, assigner: Assigner,
                 opts: MasterOptions, grpc_address: str = "",
                 node_stubs: rpc.ChannelCache | None = None,
                 key_clock: KeyClock | None = None, vacuumer: Vacuumer | None = None):
        self._node_stubs = node_stubs or rpc.VolumeStubs()
        self.store = store
        self.topology = topology
        self.assigner = assigner
        self.opts = opts
        self.grpc_address = grpc_address
        self.key_clock = key_clock or KeyClock(store.counter(schema.COUNTER_NEEDLE_KEY))
        self.vacuumer = vacuumer or Vacuumer(topology, self._node_stubs, opts.vacuum_threshold)
        self.namespace = Namespace(store, on_commit=metrics.COMMITS.inc,
                                   inline_max=opts.inline_max)
        self.mutation_address = ""  # set once the ZMQ mutation channel is bound
        self.mutation_server = None  # the MutationServer, once it runs: gRPC mutations go
                                     # through its thread
        # Mount sessions and the callbacks granted to them: lookups grant (here), the
        # mutation channel renews sessions and breaks callbacks.
        self.sessions = SessionTable(opts.session_lease)
        self.callbacks = CallbackTable(opts.max_callbacks)
        # Who may mount what (exports.py); replaced whole by MasterNode.reload.
        self.exports = exports.ExportTable()
        # The other masters of a shared PostgreSQL database (peers.py); None: the only one.
        self.peers: PeerLink | None = None

    def leads(self) -> bool:
        """Whether this master does what only one may: placement, reaping, vacuum."""
        return self.peers is None or self.peers.leader

    def require_leader(self, context) -> None:
        """UNAVAILABLE, naming the leader, on a master that does not lead: a client with a
        list of masters moves on to the next one at once."""
        if not self.leads():
            assert self.peers is not None
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"not the leader (leader: {self.peers.leader_address() or 'none yet'})")


def open_store(opts: MasterOptions) -> MetadataStore:
    """The metadata store `--meta` names: PostgreSQL for a postgresql:// URL, else SQLite in
    the data dir. A database that cannot be reached is an OSError with one line (and no
    password): the node's start-up reports it and exits 1."""
    if not opts.meta:
        return SQLiteStore.open_dir(opts.data_dir, opts.sqlite_synchronous)
    if not opts.meta.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"--meta must be a postgresql:// URL, got {redact(opts.meta)!r}")
    import psycopg

    from cluster.master.pg_store import PostgresStore
    try:
        return PostgresStore(opts.meta, application_name=f"kelp-master-{opts.name}")
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OSError(f"metadata store {redact(opts.meta)}: {first}") from None


def redact(url: str) -> str:
    """A database URL fit for a log: its password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


class MasterNode:
    """One master: store + topology + assigner + reaper behind gRPC and HTTP."""

    def __init__(self, opts: MasterOptions):
        check_replication(opts.default_replication)
        self.opts = opts
        self.store: MetadataStore | None = None
        self.topology: Topology | None = None
        self.assigner: Assigner | None = None
        self.reaper: Reaper | None = None
        self.vacuumer: Vacuumer | None = None
        self.grpc_port = 0
        self.http_port = 0
        self._server: grpc.Server | None = None
        self.mutations: MutationServer | None = None
        self.peers: PeerLink | None = None
        self._http: StatusServer | None = None
        self.transport = Transport("master", opts.tls_dir)
        self.servicer: MasterServicer | None = None
        self._stubs = self.transport.volume_stubs()
        self._stopped = threading.Event()
        self._lock_file = None
        self._started = time.monotonic()

    @property
    def grpc_address(self) -> str:
        return f"{self.opts.ip}:{self.grpc_port}"

    def start(self) -> MasterNode:
        opts = self.opts
        self._lock_data_dir()
        try:
            self.store = open_store(opts)
            volume_ids = sequencer.volume_ids(self.store)
            self.topology = Topology(self.store, opts.dead_after, opts.volume_size_limit,
                                     on_volume_seen=volume_ids.ensure_above)
            self.assigner = Assigner(self.topology, sequencer.needle_keys(self.store),
                                     volume_ids, self._allocate, opts.default_replication,
                                     on_grow=lambda vid: metrics.VOLUMES_GROWN.inc(),
                                     warming_up=self._warming_up)
            self._server, health = self.transport.make_server(max_workers=32)
            self.vacuumer = Vacuumer(self.topology, self._stubs, opts.vacuum_threshold,
                                     opts.vacuum_interval)
            self.servicer = MasterServicer(
                self.store, self.topology, self.assigner, opts, node_stubs=self._stubs,
                key_clock=KeyClock(self.store.counter(schema.COUNTER_NEEDLE_KEY)),
                vacuumer=self.vacuumer)
            self.servicer.exports = self._load_exports()
            self.vacuumer.active = self.servicer.leads
            rpc.add_servicer(self._server, master_pb2_grpc.add_MasterServicer_to_server,
                             self.servicer)
            servicer = self.servicer
            self.mutations = MutationServer(self.servicer.namespace, self.store, opts.ip,
                                            opts.zmq_port, sessions=self.servicer.sessions,
                                            callbacks=self.servicer.callbacks,
                                            transport=self.transport,
                                            exports=lambda: servicer.exports).start()
            self.servicer.mutation_address = self.mutations.address
            self.servicer.mutation_server = self.mutations
            self.grpc_port = self.transport.bind(self._server, opts.ip, opts.grpc_port)
            self.servicer.grpc_address = self.grpc_address
            if opts.meta:
                self.peers = self._link_peers()
            self._http = StatusServer(opts.ip, opts.port, self.status)
            self.http_port = self._http.port
            self._server.start()
            self._http.start()
            self.reaper = Reaper(self.store, self.topology, self._stubs, opts.reaper_interval,
                                 on_deleted=metrics.NEEDLES_REAPED.inc,
                                 active=self.servicer.leads)
            self.reaper.start()
            self.vacuumer.start()
            rpc.set_serving(health)
            rpc.set_serving(health, "kelp.master.Master")
        except BaseException:
            self.stop()
            raise
        log.info("master %s serving gRPC on %s, mutations (ZMQ) on %s, HTTP on %s:%d "
                 "(data in %s)", opts.name, self.grpc_address, self.mutations.address, opts.ip,
                 self.http_port, opts.data_dir)
        return self

    def _link_peers(self) -> PeerLink:
        """Join the masters of the shared database: a row, a try for the leadership, and
        callback breaks to and from the others (peers.py)."""
        assert self.mutations is not None
        assert self.servicer is not None
        mutations = self.mutations
        link = PeerLink(self.opts.meta, self.grpc_address, mutations.address, self.opts.name,
                        on_break=mutations.wake,
                        on_peer_dead=mutations.hold_changes_for_lease_from)
        mutations.peers = link
        self.servicer.peers = link
        return link.start()

    def _load_exports(self) -> exports.ExportTable:
        table = exports.load(self.opts.exports)
        if self.opts.exports:
            log.info("exports from %s: %s", self.opts.exports,
                     "; ".join(exports.describe(table.exports)) or "none (no client may mount)")
        return table

    def reload(self) -> None:
        """SIGHUP (cluster/common/node.py): the admitted CURVE keys and the exports file are
        read again. New sessions get the new exports; open ones keep theirs until they are
        opened again (docs/security.md). A file that does not parse keeps the old rules."""
        self.transport.reload()
        if self.servicer is None:
            return
        try:
            self.servicer.exports = self._load_exports()
        except ConfigError as e:
            log.error("exports not reloaded, the old ones stay: %s", e)

    def _lock_data_dir(self) -> None:
        """One master per data dir: a second one would hand out the same ids."""
        os.makedirs(self.opts.data_dir, exist_ok=True)
        # Held open for the node's life (closing it releases the flock), so no `with`.
        fh = open(os.path.join(self.opts.data_dir, "master.lock"), "a+")  # noqa: SIM115
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise OSError(f"data dir {self.opts.data_dir} is in use by another master") from None
        self._lock_file = fh

    def _warming_up(self) -> bool:
        """Just (re)started, and some volume server registered before has not reported yet:
        the topology is incomplete for up to dead_after seconds."""
        if time.monotonic() > self._started + self.opts.dead_after:
            return False
        heard = {s.server_id for s, _ in self.topology.servers() if s.heard}
        return any(sid not in heard for sid in self.store.server_ids())

    def _allocate(self, server: ServerState, volume_id: int, replication: int) -> None:
        try:
            # No wait_for_ready: a server that died since its last heartbeat must fail fast so
            # growth can pick another; a restarted one has a fresh channel (reset when it
            # registered).
            self._stubs.get(server.grpc_address).AllocateVolume(
                volume_pb2.AllocateRequest(volume_id=volume_id, replication=replication),
                timeout=ALLOCATE_TIMEOUT_S,
            )
        except grpc.RpcError as e:
            err = fserror_from_rpc(e)
            raise FsError(err.errno if err.errno == errno.ENOSPC else errno.EIO,
                          f"{e.code().name}: {e.details()}") from None

    def status(self) -> dict:
        topo, store = self.topology, self.store
        return {
            "name": self.opts.name,
            "grpc_address": self.grpc_address,
            "mutation_address": self.mutations.address if self.mutations else "",
            "files": store.count_inodes() if store else 0,
            "pending_deletions": store.pending_deletions() if store else 0,
            "default_replication": self.opts.default_replication,
            "leader": self.peers.leader_address() if self.peers else self.grpc_address,
            "servers": [
                {"server_id": s.server_id, "name": s.name, "grpc_address": s.grpc_address,
                 "alive": alive, "volumes": sorted(s.volumes), "free_bytes": s.free_bytes,
                 "total_bytes": s.total_bytes}
                for s, alive in (topo.servers() if topo else [])
            ],
            "gateways": [
                {"name": g.name, "address": g.address, "alive": alive}
                for g, alive in (topo.gateways() if topo else [])
            ],
        }

    def stop(self, grace: float = 1.0) -> None:
        if self.peers:
            self.peers.stop()
            self.peers = None
        if self.vacuumer:
            self.vacuumer.stop()
        if self.reaper:
            self.reaper.stop()
        if self._server:
            self._server.stop(grace).wait()
        if self.mutations:
            self.mutations.stop()
            self.mutations = None
        if self._http:
            self._http.stop()
            self._http = None
        self._stubs.close()
        if self.store:
            self.store.close()
            self.store = None
        if self._lock_file:
            self._lock_file.close()  # releases the flock
            self._lock_file = None
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def main(opts: MasterOptions) -> int:
    """Run a master until SIGINT/SIGTERM; the exit code for the CLI."""
    return run_node("master", opts, MasterNode,
                    start_errors=(OSError, SchemaError, ValueError, FsError))
