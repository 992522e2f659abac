"""Per-call floors: what one round trip between two processes costs on this machine.

    measure_floors(n=2000) -> {"grpc_unary_us": ..., "zmq_roundtrip_us": ..., "socketpair_us": ...}

Each number is the mean round trip in microseconds of `n` calls made one after another from
this process to a server process, after 200 warm-up calls (total time / n):

    grpc_unary_us     a sync grpcio unary call (Master.StatFs from protos/master.proto, with the
                      channel options of cluster.common.rpc.channel) to a grpc.server whose
                      handler returns an empty StatFsResponse
    zmq_roundtrip_us  a pyzmq DEALER -> ROUTER echo of 64 bytes over tcp on 127.0.0.1
    socketpair_us     a unix-domain socketpair echo of 64 bytes

They bound what any Python file system can reach here: an operation that needs k master RPCs
takes at least k x grpc_unary_us on top of what the FUSE round trip itself costs (the
passthrough target measures that).

Each server is a subprocess of this one (`python -m bench.floors serve KIND`), bound to
127.0.0.1 port 0 (the kernel picks a free port; the server prints it on stdout), and is stopped
by its pid at the end, also on error. A server also exits when its stdin (a pipe from us)
closes, so it cannot outlive this process.
"""
from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MSG = b"k" * 64
WARMUP = 200

# The pids of the servers the last measure_floors() started (all stopped when it returns).
last_server_pids: list[int] = []


# -- servers (run in the child process) -----------------------------------------------------

def _exit_when_stdin_closes() -> None:
    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def _serve_grpc() -> None:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from cluster.common import rpc
    from protos import master_pb2, master_pb2_grpc

    class StatFsOnly(master_pb2_grpc.MasterServicer):
        def StatFs(self, request, context):  # noqa: N802 - the generated name
            return master_pb2.StatFsResponse()

    server = grpc.server(ThreadPoolExecutor(max_workers=4), options=rpc.SERVER_OPTIONS)
    master_pb2_grpc.add_MasterServicer_to_server(StatFsOnly(), server)
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def _serve_zmq() -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"tcp://{HOST}:*")
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1], flush=True)
    while True:
        sock.send_multipart(sock.recv_multipart())


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            return b""
        buf += part
    return bytes(buf)


def _serve_socketpair(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    print(0, flush=True)
    while True:
        data = _recv_exact(sock, len(MSG))
        if not data:
            return
        sock.sendall(data)


# -- the measuring side ---------------------------------------------------------------------

class _Server:
    """`python -m bench.floors serve KIND` as a context manager: enter returns the port it
    printed, exit stops exactly that process (SIGTERM, then SIGKILL) and reaps it."""

    def __init__(self, kind: str, pass_fd: int | None = None, timeout: float = 30.0):
        self.kind, self.pass_fd, self.timeout = kind, pass_fd, timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> int:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        args = [sys.executable, "-m", "bench.floors", "serve", self.kind]
        fds: tuple[int, ...] = ()
        if self.pass_fd is not None:
            args.append(str(self.pass_fd))
            fds = (self.pass_fd,)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=str(REPO_ROOT),
                                     pass_fds=fds)
        last_server_pids.append(self.proc.pid)
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
            line = self.proc.stdout.readline() if ready else b""
            if not line.strip():
                raise RuntimeError(f"floor server {self.kind!r} did not start: "
                                   + self._stderr_tail())
            return int(line)
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _stderr_tail(self) -> str:
        try:
            self.proc.wait(timeout=2)  # its stdout closed: it is exiting
        except subprocess.TimeoutExpired:
            return f"no port within {self.timeout:.0f}s"
        return self.proc.stderr.read().decode(errors="replace")[-2000:] or \
            f"exit code {self.proc.returncode}"

    def __exit__(self, *exc) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        finally:
            for f in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    f.close()
                except OSError:
                    pass


def _per_call_us(call, n: int) -> float:
    for _ in range(WARMUP):
        call()
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - t0) / n * 1e6


def grpc_unary_us(n: int) -> float:
    import grpc

    from cluster.common import rpc
    from protos import master_pb2, master_pb2_grpc

    with _Server("grpc") as port:
        channel = rpc.channel(f"{HOST}:{port}")
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = master_pb2_grpc.MasterStub(channel)
            request = master_pb2.Empty()
            return _per_call_us(lambda: stub.StatFs(request, timeout=10), n)
        finally:
            channel.close()


def zmq_roundtrip_us(n: int) -> float:
    import zmq

    with _Server("zmq") as port:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        try:
            sock.connect(f"tcp://{HOST}:{port}")

            def call() -> None:
                sock.send(MSG)
                if len(sock.recv()) != len(MSG):
                    raise RuntimeError("zmq echo returned a different message")
            return _per_call_us(call, n)
        finally:
            sock.close()
            ctx.term()


def socketpair_us(n: int) -> float:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        ours.settimeout(10)
        with _Server("socketpair", pass_fd=theirs.fileno()):
            theirs.close()

            def call() -> None:
                ours.sendall(MSG)
                if len(_recv_exact(ours, len(MSG))) != len(MSG):
                    raise RuntimeError("socketpair echo closed")
            try:
                return _per_call_us(call, n)
            finally:
                ours.shutdown(socket.SHUT_RDWR)  # the server sees EOF and ends
    finally:
        ours.close()
        theirs.close()


def measure_floors(n: int = 2000) -> dict[str, float]:
    """Round-trip microseconds per call between two processes; see the module docstring."""
    last_server_pids.clear()
    return {
        "grpc_unary_us": grpc_unary_us(n),
        "zmq_roundtrip_us": zmq_roundtrip_us(n),
        "socketpair_us": socketpair_us(n),
    }


def describe(floors: dict[str, float]) -> str:
    """One line for the report: 'gRPC unary 440 us, ZMQ 120 us, unix socket 58 us'."""
    names = (("grpc_unary_us", "gRPC unary"), ("zmq_roundtrip_us", "ZMQ"),
             ("socketpair_us", "unix socket"))
    return ", ".join(f"{label} {floors[k]:.0f} us" for k, label in names if k in floors)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        _exit_when_stdin_closes()
        kind = argv[1]
        if kind == "grpc":
            _serve_grpc()
        elif kind == "zmq":
            _serve_zmq()
        elif kind == "socketpair":
            _serve_socketpair(int(argv[2]))
        else:
            print(f"unknown server kind {kind!r}", file=sys.stderr)
            return 2
        return 0
    n = int(argv[0]) if argv else 2000
    floors = measure_floors(n)
    print("per-call floors between two processes: " + describe(floors))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
