"""The gateway node: a ZMQ ROUTER in front of the chunk writer, plus heartbeats and HTTP status.

Threads and who owns what (zmq sockets are not thread-safe, so each has exactly one owner):

* `gateway-router` owns the ROUTER and the inproc PULL. It decodes each client message
  (protocol.decode), answers malformed ones and Pings itself, and hands Writes and Commits to
  the worker pool. Workers push `[identity, reply]` to the PULL through a PUSH socket of their
  own, and this thread forwards them to the ROUTER.
* `gw-worker-*` (opts.workers) run GatewayHandler.handle: the gRPC writes to the volume
  servers and the commits to the master.
* `gateway-heartbeat` (one per master, `gateway-heartbeat-<i>` with several) tells its
  master every second that this gateway is alive, on one long-lived channel; it keeps trying
  while the master is down. Every master is told, so a mount on any of them finds a gateway;
  the writes' own calls (Assign, commits) go to one master at a time (mastercall.MasterCalls).
* `http` serves /status and /metrics.

Memory is bounded: the router thread stops reading from the ROUTER while 2 x workers requests
are in flight, so further chunks wait in ZMQ's bounded receive pipes (RCVHWM) and then in the
clients' TCP buffers, which is the back-pressure the clients' credits expect.
"""
from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from concurrent import futures

import grpc
import zmq

from cluster.common import curve, rpc
from cluster.common.httpstatus import StatusServer
from cluster.common.node import run_node
from cluster.common.security import Transport
from cluster.gateway import metrics
from cluster.gateway.assigner import Assigner
from cluster.gateway.handler import GatewayHandler
from cluster.gateway.mastercall import MasterCalls
from cluster.gateway.options import GatewayOptions
from cluster.gateway.protocol import BadRequest, decode, error_reply
from cluster.gateway.writer import ChunkWriter, VolumePool
from protos import master_pb2

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0
RECEIVE_HWM = 64        # messages queued per client pipe before ZMQ stops reading its socket
_node_ids = itertools.count(1)


class GatewayNode:
    def __init__(self, opts: GatewayOptions):
        self.opts = opts
        self.name = opts.name
        self.port = 0
        self.http_port = 0
        self.started_at = 0.0
        self._ctx = zmq.Context()
        self._inproc = f"inproc://gateway-replies-{next(_node_ids)}"
        self._router: zmq.Socket | None = None
        self._pull: zmq.Socket | None = None
        self._push_local = threading.local()
        self._push_sockets: list[zmq.Socket] = []
        self._push_lock = threading.Lock()
        self._inflight = 0  # touched by the router thread only
        self._max_inflight = max(2, 2 * opts.workers)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self.transport = Transport("gateway", opts.tls_dir)
        self._master = MasterCalls(opts.master, self.transport.channel_factory("master"))
        self.masters = self._master.pool.addresses
        self.assigner = Assigner(self._master, batch=opts.assign_batch)
        self.writer = ChunkWriter(self.assigner, self._master,
                                  VolumePool(self.transport.channel_factory("volume")),
                                  write_retries=opts.write_retries,
                                  replica_threads=max(4, 2 * opts.workers))
        self.handler = GatewayHandler(self.writer, self.name)
        self._workers = futures.ThreadPoolExecutor(max_workers=max(1, opts.workers),
                                                   thread_name_prefix="gw-worker")
        self._router_thread = threading.Thread(target=self._serve, name="gateway-router",
                                               daemon=True)
        several = len(self.masters) > 1
        self._heartbeats = [
            rpc.StoppableThread(f"gateway-heartbeat-{i}" if several else "gateway-heartbeat",
                                HEARTBEAT_INTERVAL_S,
                                functools.partial(self._send_heartbeat, address))
            for i, address in enumerate(self.masters)]
        self._master_up: dict[str, bool | None] = {a: None for a in self.masters}
        self._http: StatusServer | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def address(self) -> str:
        return f"{self.opts.ip}:{self.port}"

    def start(self) -> GatewayNode:
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a reply to a vanished client is dropped
        router.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        router.setsockopt(zmq.SNDHWM, 10_000)       # replies are small; never drop them early
        router.setsockopt(zmq.LINGER, 0)
        # A frame far over the chunk limit is not worth buffering to answer EINVAL: ZMQ drops
        # that connection instead. Frames a little over the limit still get an EINVAL reply.
        router.setsockopt(zmq.MAXMSGSIZE, 2 * self.opts.max_chunk + (1 << 20))
        router.setsockopt(zmq.HEARTBEAT_IVL, 2000)  # notice dead clients, free their pipes
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        self.transport.zmq_server(router)   # CURVE and the ZAP handler, if secure
        try:
            if self.opts.port == 0:
                self.port = router.bind_to_random_port(f"tcp://{self.opts.ip}")
            else:
                router.bind(f"tcp://{self.opts.ip}:{self.opts.port}")
                self.port = self.opts.port
        except zmq.ZMQError as e:
            router.close(0)
            raise OSError(f"gateway cannot bind tcp://{self.opts.ip}:{self.opts.port}: {e}") \
                from None
        self._router = router
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.bind(self._inproc)
        self._http = StatusServer(self.opts.ip, self.opts.http_port, self.status).start()
        self.http_port = self._http.port
        self.started_at = time.time()
        self._router_thread.start()
        for beat in self._heartbeats:
            beat.start()
        log.info("gateway %s listening on tcp://%s (http %d, master %s)", self.name,
                 self.address, self.http_port, self.opts.master)
        return self

    def stop(self) -> None:
        if self._stopping.is_set():
            self._stopped.wait()
            return
        self._stopping.set()
        for beat in self._heartbeats:
            beat.stop()
        if self._router_thread.is_alive():
            self._router_thread.join()
        self._workers.shutdown(wait=True, cancel_futures=True)
        self.writer.close()
        if self._http is not None:
            self._http.stop()
        self._master.close()
        self.transport.close()   # the ZAP handler's socket, before the context goes
        # Closes the ROUTER, the PULL and every worker's PUSH, dropping unsent replies.
        self._ctx.destroy(linger=0)
        self._stopped.set()
        log.info("gateway %s stopped", self.name)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    # ---------------------------------------------------------------- status

    def status(self) -> dict:
        return {
            "name": self.name,
            "kind": "gateway",
            "address": self.address,
            "http_port": self.http_port,
            "master": self.opts.master,
            # With one master, whether it answers heartbeats; with several, whether any does.
            "master_reachable": (self._master_up[self.masters[0]] if len(self.masters) == 1
                                 else any(self._master_up.values())),
            "masters": dict(self._master_up),
            "master_in_use": self._master.pool.current,
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else 0,
            "workers": self.opts.workers,
            "in_flight": self._inflight,
            "replica_failures": self.writer.replica_failures,
            "write_retries": self.writer.retries,
            **self.handler.stats,
        }

    def _send_heartbeat(self, address: str) -> None:
        """Tell the master at `address` this gateway lives (each master its own thread)."""
        beat = master_pb2.GatewayHeartbeat(name=self.name, address=self.address,
                                           http_address=f"{self.opts.ip}:{self.http_port}")
        stub = self._master.pool.stub(address)
        try:
            stub.SendGatewayHeartbeat(beat, timeout=2.0)
        except grpc.RpcError as e:
            if self._master_up[address] is not False:
                log.warning("gateway %s: heartbeat to master %s failed (%s); will keep trying",
                            self.name, address, e.code().name if hasattr(e, "code") else e)
            self._master_up[address] = False
            return
        if self._master_up[address] is False:
            log.info("gateway %s: master %s reachable again", self.name, address)
        self._master_up[address] = True
        # Learn which volume servers the master counts dead, so no write waits on one.
        try:
            status = stub.ClusterStatus(master_pb2.Empty(), timeout=2.0)
        except grpc.RpcError:
            return
        dead = {s.server_id for s in status.servers if not s.alive}
        if dead and self.assigner.forget_servers(dead):
            log.info("gateway %s: dropped cached fids on dead servers %s", self.name, sorted(dead))

    # ---------------------------------------------------------------- the router thread

    def _serve(self) -> None:
        router, pull = self._router, self._pull
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        reading = False
        while not self._stopping.is_set():
            want = self._inflight < self._max_inflight
            if want != reading:
                if want:
                    poller.register(router, zmq.POLLIN)
                else:
                    poller.unregister(router)
                reading = want
            try:
                events = dict(poller.poll(200))
            except zmq.ZMQError as e:
                if self._stopping.is_set():
                    break
                log.error("gateway %s: poll failed: %s", self.name, e)
                continue
            if pull in events:
                self._forward_replies()
            if reading and router in events:
                self._read_requests()

    def _forward_replies(self) -> None:
        while True:
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._inflight -= 1
            metrics.IN_FLIGHT.labels(self.name).set(self._inflight)
            self._send(frames)

    def _send(self, frames: list) -> None:
        try:
            self._router.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as e:  # the client's pipe is full or gone: it will time out
            log.warning("gateway %s: reply dropped: %s", self.name, e)

    def _read_requests(self) -> None:
        # Drain what is ready, but leave room to forward replies and respect the bound.
        for _ in range(64):
            if self._inflight >= self._max_inflight:
                return
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            identity = frames[0].bytes
            client = curve.peer_identity(frames[1])   # who sent it (None: no CURVE)
            try:
                request, payload = decode(frames[1:], self.opts.max_chunk)
            except BadRequest as e:
                self.handler.count("malformed")
                metrics.ERRORS.labels(self.name, "malformed").inc()
                log.warning("gateway %s: malformed message from client %s: %s", self.name,
                            identity.hex(), e.message)
                self._send([identity, error_reply(e.request_id, "EINVAL",
                                                  e.message).SerializeToString()])
                continue
            if request.WhichOneof("body") == "ping":
                self._send([identity, self.handler.ping(request).SerializeToString()])
                continue
            self._inflight += 1
            metrics.IN_FLIGHT.labels(self.name).set(self._inflight)
            # The payload is a memoryview of the received frame: no copy, and it keeps the
            # frame alive until the worker is done.
            self._workers.submit(self._work, identity, request, payload,
                                 ":".join(client) if client else "")

    def _work(self, identity: bytes, request, payload, client: str = "") -> None:
        try:
            reply = self.handler.handle(request, payload, client).SerializeToString()
        except Exception as e:
            log.exception("gateway %s: request failed", self.name)
            reply = error_reply(request.request_id, "EIO", f"{type(e).__name__}: {e}") \
                .SerializeToString()
        try:
            self._push_socket().send_multipart([identity, reply])
        except zmq.ZMQError as e:
            if not self._stopping.is_set():
                log.error("gateway %s: cannot hand a reply to the router: %s", self.name, e)

    def _push_socket(self) -> zmq.Socket:
        sock = getattr(self._push_local, "sock", None)
        if sock is None:
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)  # in-flight work is bounded by the router thread
            sock.connect(self._inproc)
            self._push_local.sock = sock
            with self._push_lock:
                self._push_sockets.append(sock)
        return sock


def main(opts: GatewayOptions) -> int:
    """Run a gateway until SIGINT/SIGTERM; 0 on a clean stop, 1 if it cannot start."""
    return run_node("gateway", opts, GatewayNode,
                    start_errors=(OSError, ValueError, zmq.ZMQError))
