"""Per-call floors: what one round trip between two processes costs on this machine.

    measure_floors(n=2000) -> {"grpc_unary_us": ..., "zmq_roundtrip_us": ..., "socketpair_us": ...,
                               "fdatasync_us": ..., "sqlite_commit_us": ...,
                               "grpc_4mib_mbps": ...}

Each number is the mean round trip in microseconds of `n` calls made one after another from
this process to a server process, after 200 warm-up calls (total time / n):

    grpc_unary_us     a sync grpcio unary call (Master.StatFs from protos/master.proto, with the
                      channel options of cluster.common.rpc.channel) to a grpc.server whose
                      handler returns an empty StatFsResponse
    zmq_roundtrip_us  a pyzmq DEALER -> ROUTER echo of 64 bytes over tcp on 127.0.0.1
    socketpair_us     a unix-domain socketpair echo of 64 bytes

and, for the durable write path and the chunk read path (in this process, on the disk of
`workdir`, where the benchmark's servers keep their data):

    fdatasync_us      append 4 KiB to a file and fdatasync it (what a volume server waits for
                      before it acknowledges a chunk)
    sqlite_commit_us  commit a one-row INSERT in SQLite, WAL mode, synchronous=FULL (what the
                      master waits for before it answers a namespace change)
    grpc_4mib_mbps    MB/s of sync unary calls that each return 4 MiB (one chunk) from the
                      server's memory, one call at a time (the best a single sequential chunk
                      reader can do before any disk, CRC or FUSE work)
    grpc_4mib_x4_mbps the same with four calls in flight over one channel (the mount's
                      read-ahead depth)

They bound what any Python file system can reach here: an operation that needs k master RPCs
takes at least k x grpc_unary_us on top of what the FUSE round trip itself costs (the
passthrough target measures that), plus a disk sync for each step that must be durable.

Each server is a subprocess of this one (`python -m bench.floors serve KIND`), bound to
127.0.0.1 port 0 (the kernel picks a free port; the server prints it on stdout), and is stopped
by its pid at the end, also on error. A server also exits when its stdin (a pipe from us)
closes, so it cannot outlive this process.
"""
from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Where the packages are (a checkout, or site-packages): the cwd of `python -m bench.floors`
# children, so `-m` finds this copy of bench before anything else.
REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MSG = b"k" * 64
WARMUP = 200
CHUNK = 4 << 20     # bytes per call in grpc_4mib_mbps: the default chunk size
CHUNK_CALLS = 64    # 256 MiB in all
READERS = 4         # calls in flight for grpc_4mib_x4_mbps: the mount's read-ahead depth

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
    import grpc

    from cluster.common import rpc
    from protos import master_pb2, master_pb2_grpc, volume_pb2, volume_pb2_grpc

    class StatFsOnly(master_pb2_grpc.MasterServicer):
        def StatFs(self, request, context):
            return master_pb2.StatFsResponse()

    chunk = os.urandom(CHUNK)

    class ChunkOnly(volume_pb2_grpc.VolumeServicer):
        def ReadNeedle(self, request, context):
            return volume_pb2.ReadResponse(data=chunk)

    server = grpc.server(ThreadPoolExecutor(max_workers=4), options=rpc.SERVER_OPTIONS)
    master_pb2_grpc.add_MasterServicer_to_server(StatFsOnly(), server)
    volume_pb2_grpc.add_VolumeServicer_to_server(ChunkOnly(), server)
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
        args = [sys.executable, "-m", "bench.floors", "serve", self.kind]
        fds: tuple[int, ...] = ()
        if self.pass_fd is not None:
            args.append(str(self.pass_fd))
            fds = (self.pass_fd,)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=str(REPO_ROOT),
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
                with contextlib.suppress(OSError):
                    f.close()


def _per_call_us(call, n: int) -> float:
    for _ in range(WARMUP):
        call()
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - t0) / n * 1e6


def grpc_floors(n: int) -> tuple[float, float, float]:
    """(unary round trip in us, MB/s of 4 MiB replies one at a time, MB/s with READERS calls
    in flight over the one channel) against one gRPC server process."""
    import grpc

    from cluster.common import rpc
    from protos import master_pb2, master_pb2_grpc, volume_pb2, volume_pb2_grpc

    with _Server("grpc") as port:
        channel = rpc.channel(f"{HOST}:{port}")
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = master_pb2_grpc.MasterStub(channel)
            request = master_pb2.Empty()
            unary = _per_call_us(lambda: stub.StatFs(request, timeout=10), n)
            volume = volume_pb2_grpc.VolumeStub(channel)
            read = volume_pb2.ReadRequest(volume_id=1, key=1)

            def fetch() -> None:
                if len(volume.ReadNeedle(read, timeout=30).data) != CHUNK:
                    raise RuntimeError("the chunk server returned a short reply")
            volume.ReadNeedle(read, timeout=30)  # warm-up: connection and buffers
            t0 = time.perf_counter()
            for _ in range(CHUNK_CALLS):
                fetch()
            one = CHUNK * CHUNK_CALLS / (time.perf_counter() - t0) / 1e6
            with ThreadPoolExecutor(READERS) as pool:
                t0 = time.perf_counter()
                list(pool.map(lambda _: fetch(), range(CHUNK_CALLS)))
                parallel = CHUNK * CHUNK_CALLS / (time.perf_counter() - t0) / 1e6
            return unary, one, parallel
        finally:
            channel.close()


def fdatasync_us(workdir: str, n: int) -> float:
    """4 KiB appended and fdatasynced, n times, in a temp file under `workdir`."""
    import tempfile
    block = os.urandom(4096)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix="floor-sync-") as fh:
        fd, offset = fh.fileno(), 0

        def call() -> None:
            nonlocal offset
            os.pwrite(fd, block, offset)
            offset += len(block)
            os.fdatasync(fd)
        return _per_call_us(call, n)


def sqlite_commit_us(workdir: str, n: int) -> float:
    """One-row INSERT commits in WAL mode with synchronous=FULL, in a temp dir under
    `workdir` (the settings of the master's metadata store)."""
    import sqlite3
    import tempfile
    with tempfile.TemporaryDirectory(dir=workdir, prefix="floor-sqlite-") as d:
        conn = sqlite3.connect(os.path.join(d, "floor.db"), isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
            keys = iter(range(1, 1 << 62))

            def call() -> None:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t VALUES (?, ?)", (next(keys), MSG))
                conn.execute("COMMIT")
            return _per_call_us(call, n)
        finally:
            conn.close()


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


def measure_floors(n: int = 2000, workdir: str | None = None) -> dict[str, float]:
    """The floors of the module docstring; `workdir` (default: the temp dir) is where the disk
    floors write."""
    import tempfile
    workdir = workdir or tempfile.gettempdir()
    last_server_pids.clear()
    unary, chunk_mbps, chunk_x4_mbps = grpc_floors(n)
    syncs = max(50, n // 4)  # disk syncs are slower; fewer give the same precision
    return {
        "grpc_unary_us": unary,
        "zmq_roundtrip_us": zmq_roundtrip_us(n),
        "socketpair_us": socketpair_us(n),
        "fdatasync_us": fdatasync_us(workdir, syncs),
        "sqlite_commit_us": sqlite_commit_us(workdir, syncs),
        "grpc_4mib_mbps": chunk_mbps,
        "grpc_4mib_x4_mbps": chunk_x4_mbps,
    }


_LABELS = (("grpc_unary_us", "gRPC unary {:.0f} us"), ("zmq_roundtrip_us", "ZMQ {:.0f} us"),
           ("socketpair_us", "unix socket {:.0f} us"),
           ("fdatasync_us", "4 KiB append + fdatasync {:.0f} us"),
           ("sqlite_commit_us", "SQLite FULL commit {:.0f} us"),
           ("grpc_4mib_mbps", "4 MiB gRPC replies one at a time {:.0f} MB/s"),
           ("grpc_4mib_x4_mbps", "four at a time {:.0f} MB/s"))


def describe(floors: dict[str, float]) -> str:
    """One line for the report: 'gRPC unary 440 us, ZMQ 120 us, unix socket 58 us, ...'."""
    return ", ".join(fmt.format(floors[k]) for k, fmt in _LABELS if k in floors)


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
    print("per-call floors: " + describe(floors))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
