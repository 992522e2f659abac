"""The guard of tests/unit/conftest.py: every way a unit test could open a socket or start a
process is refused and recorded; a socketpair and a pipe are allowed."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import subprocess
import sys

import grpc
import grpc.aio
import pytest
import zmq

from tests.unit.conftest import ForbiddenInUnitTest

REFUSED = "unit tests start no process and open no socket"


@pytest.fixture
def guard(isolation_guard):
    """The guard, its record emptied after the test: the refusals here are deliberate."""
    yield isolation_guard
    isolation_guard.violations.clear()


def refused(guard, what: str, call, *args, **kwargs) -> None:
    before = len(guard.violations)
    with pytest.raises(ForbiddenInUnitTest, match=REFUSED):
        call(*args, **kwargs)
    assert len(guard.violations) == before + 1
    assert guard.violations[-1].startswith(what), guard.violations[-1]


@pytest.mark.timeout(10)
def test_network_sockets_are_refused(guard):
    refused(guard, "socket.socket(AF_INET)", socket.socket)
    refused(guard, "socket.socket(AF_INET6)", socket.socket, socket.AF_INET6)
    refused(guard, "socket.socket(AF_INET)", socket.create_connection, ("127.0.0.1", 9))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        refused(guard, "socket.socket.bind", unix.bind, "/nonexistent/kelp-test.sock")
        refused(guard, "socket.socket.connect", unix.connect, "/nonexistent/kelp-test.sock")
        refused(guard, "socket.socket.connect_ex", unix.connect_ex, "/nonexistent/x.sock")


@pytest.mark.timeout(10)
def test_zmq_and_grpc_sockets_are_refused(guard):
    ctx = zmq.Context()
    try:
        refused(guard, "zmq.Context.socket", ctx.socket, zmq.DEALER)
        refused(guard, "zmq.Socket", zmq.Socket, ctx, zmq.DEALER)
    finally:
        ctx.term()
    refused(guard, "grpc.server", grpc.server, None)
    refused(guard, "grpc.insecure_channel", grpc.insecure_channel, "127.0.0.1:9")
    refused(guard, "grpc.secure_channel", grpc.secure_channel, "127.0.0.1:9", None)
    refused(guard, "grpc.aio.server", grpc.aio.server)
    refused(guard, "grpc.aio.insecure_channel", grpc.aio.insecure_channel, "127.0.0.1:9")


@pytest.mark.timeout(10)
def test_processes_are_refused(guard):
    refused(guard, "subprocess.Popen", subprocess.run, [sys.executable, "-c", "pass"])
    refused(guard, "os.fork", os.fork)
    refused(guard, "os.system", os.system, "true")
    refused(guard, "multiprocessing Process.start", multiprocessing.Process(target=print).start)


@pytest.mark.timeout(10)
def test_a_swallowed_refusal_is_still_recorded(guard):
    with contextlib.suppress(Exception):  # as a server thread of the code under test might
        socket.socket()
    assert len(guard.violations) == 1
    assert "socket.socket(AF_INET)" in guard.violations[0]


@pytest.mark.timeout(10)
def test_pipes_and_socketpairs_are_in_process_plumbing(guard):
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        assert os.read(r, 1) == b"x"
    finally:
        os.close(r)
        os.close(w)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"y")
        assert b.recv(1) == b"y"
    assert guard.violations == []
