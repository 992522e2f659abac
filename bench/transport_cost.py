"""What encryption costs each hop of a large write: 4 MiB messages over ZMQ (plain, CURVE) and
gRPC (plain, mutual TLS) between two processes on loopback, in MB/s.

    python -m bench.transport_cost [--mib 400]

A large file's bytes cross two hops: the mount's chunk stream to the gateway (ZMQ, CURVE on a
secure cluster) and the gateway's WriteNeedle to each replica (gRPC, TLS). This measures each
transport alone, with the cluster's own credentials and socket options, so the cost of a
secure cluster's sequential writes can be split between them (docs/bench.md).
"""
from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time

import grpc
import zmq

from cluster.common import rpc
from cluster.common.certs import make_cluster_certs
from cluster.common.security import Transport

CHUNK = 4 << 20
HOST = "127.0.0.1"


def _zmq_sink(tls_dir: str | None, port_out, count: int) -> None:
    transport = Transport("gateway", tls_dir)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    transport.zmq_server(sock)
    port_out.put(sock.bind_to_random_port(f"tcp://{HOST}"))
    for _ in range(count):
        peer, _payload = sock.recv_multipart(copy=False)
        sock.send_multipart([peer, b"ok"])
    sock.close(0)
    transport.close()
    ctx.term()


def zmq_rate(tls_dir: str | None, count: int) -> float:
    port_q: multiprocessing.Queue = multiprocessing.Queue()
    sink = multiprocessing.Process(target=_zmq_sink, args=(tls_dir, port_q, count))
    sink.start()
    port = port_q.get(timeout=30)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    Transport("client", tls_dir).zmq_client(sock, "gateway")
    sock.connect(f"tcp://{HOST}:{port}")
    payload = bytes(CHUNK)
    start = time.perf_counter()
    window = 4    # chunks in flight, as a writer's credits
    sent = received = 0
    while received < count:
        while sent < count and sent - received < window:
            sock.send(payload, copy=False)
            sent += 1
        sock.recv()
        received += 1
    elapsed = time.perf_counter() - start
    sock.close(0)
    ctx.term()
    sink.join(30)
    return count * CHUNK / elapsed / 1e6


def _grpc_sink(tls_dir: str | None, port_out, stop) -> None:
    transport = Transport("volume", tls_dir)
    # A plain server object (no role check: the sink's method is in no role table) bound
    # with the transport's credentials: the TLS is the cluster's, which is what is measured.
    server, _ = rpc.make_server(8)
    handler = grpc.method_handlers_generic_handler("bench.Sink", {
        "Put": grpc.unary_unary_rpc_method_handler(lambda request, context: b"ok")})
    server.add_generic_rpc_handlers((handler,))
    port_out.put(transport.bind(server, HOST, 0))
    server.start()
    stop.wait()
    server.stop(0)


def grpc_rate(tls_dir: str | None, count: int) -> float:
    port_q: multiprocessing.Queue = multiprocessing.Queue()
    stop = multiprocessing.Event()
    sink = multiprocessing.Process(target=_grpc_sink, args=(tls_dir, port_q, stop))
    sink.start()
    port = port_q.get(timeout=30)
    channel = Transport("gateway", tls_dir).channel(f"{HOST}:{port}", "volume")
    put = channel.unary_unary("/bench.Sink/Put")
    payload = bytes(CHUNK)
    put(payload, timeout=30)   # connect and handshake outside the timing
    start = time.perf_counter()
    futures = []
    for _ in range(count):
        futures.append(put.future(payload, timeout=60))
        if len(futures) >= 4:
            futures.pop(0).result()
    for f in futures:
        f.result()
    elapsed = time.perf_counter() - start
    channel.close()
    stop.set()
    sink.join(30)
    return count * CHUNK / elapsed / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mib", type=int, default=400, help="MiB sent per measurement")
    args = p.parse_args(argv)
    count = max(4, args.mib // 4)
    with tempfile.TemporaryDirectory() as tmp:
        make_cluster_certs(tmp)
        rows = [("ZMQ 4 MiB messages", zmq_rate(None, count), zmq_rate(tmp, count)),
                ("gRPC 4 MiB unary calls", grpc_rate(None, count), grpc_rate(tmp, count))]
    print(f"{'hop':<26}{'plain MB/s':>12}{'secure MB/s':>13}{'ratio':>8}")
    for name, plain, secure in rows:
        print(f"{name:<26}{plain:>12.0f}{secure:>13.0f}{secure / plain:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
