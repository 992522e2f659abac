"""Unit tests run inside the pytest process alone: they start no process and open no socket.

The rule, which the autouse fixtures below enforce for every test under tests/unit:

* No socket to anything. Creating an AF_INET or AF_INET6 socket.socket, and calling bind,
  connect or connect_ex on any socket.socket, fails the test. So do zmq sockets
  (zmq.Context.socket, zmq.Socket) and gRPC servers and channels (grpc.server,
  grpc.insecure_channel, grpc.secure_channel and their grpc.aio counterparts): their C code
  opens its sockets where the socket module cannot see them, so they are stopped at the
  Python call that asks for them.
* No process. subprocess.Popen (and so subprocess.run, check_output and asyncio's
  subprocesses), os.fork, os.forkpty, os.posix_spawn, os.posix_spawnp, os.system and
  multiprocessing's Process.start fail the test.

In-process plumbing is allowed: os.pipe (the wake pipe of cluster.common.wakepipe), an
unbound unix-domain socket.socketpair (an asyncio event loop's self-pipe), a zmq.Context with
no sockets, and threads.

A forbidden call raises ForbiddenInUnitTest where it is made and is also recorded, so a test
still fails (at teardown, naming the call) when the code under test swallows the exception,
for instance in a server thread. A test that needs a real server, socket or process belongs
in tests/integration.
"""
from __future__ import annotations

import multiprocessing.process
import os
import socket
import subprocess
import traceback

import grpc
import grpc.aio
import pytest
import zmq


class ForbiddenInUnitTest(AssertionError):
    """A unit test asked for a socket or a process."""


class IsolationGuard:
    """Stands in for the calls that open sockets or start processes; records each attempt."""

    def __init__(self) -> None:
        self.violations: list[str] = []

    def refuse(self, what: str) -> None:
        where = "".join(traceback.format_stack(limit=6)[:-2])
        message = (f"{what}: unit tests start no process and open no socket "
                   f"(tests/unit/conftest.py); move this test to tests/integration "
                   f"or test the logic without the transport")
        self.violations.append(f"{message}\n{where}")
        raise ForbiddenInUnitTest(message)

    def install(self, mp: pytest.MonkeyPatch) -> None:
        guard = self
        real_socket_init = socket.socket.__init__

        def socket_init(sock, *args, **kwargs):
            real_socket_init(sock, *args, **kwargs)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.close()
                guard.refuse(f"socket.socket({sock.family.name})")

        mp.setattr(socket.socket, "__init__", socket_init)
        for name in ("bind", "connect", "connect_ex"):
            mp.setattr(socket.socket, name, self._refusing(f"socket.socket.{name}"))

        mp.setattr(zmq.Context, "socket", self._refusing("zmq.Context.socket"))
        mp.setattr(zmq.Socket, "__init__", self._refusing("zmq.Socket"))
        for module, prefix in ((grpc, "grpc"), (grpc.aio, "grpc.aio")):
            for name in ("server", "insecure_channel", "secure_channel"):
                mp.setattr(module, name, self._refusing(f"{prefix}.{name}"))

        mp.setattr(subprocess.Popen, "__init__", self._refusing("subprocess.Popen"))
        for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
            if hasattr(os, name):
                mp.setattr(os, name, self._refusing(f"os.{name}"))
        mp.setattr(multiprocessing.process.BaseProcess, "start",
                   self._refusing("multiprocessing Process.start"))

    def _refusing(self, what: str):
        def refused(*args, **kwargs):
            self.refuse(what)
        return refused


@pytest.fixture(scope="package", autouse=True)
def _isolation_patches():
    """Installs the guard once for the whole tests/unit package (so module-scoped fixtures
    are covered too) and removes it when the package's last test is done."""
    guard = IsolationGuard()
    with pytest.MonkeyPatch.context() as mp:
        guard.install(mp)
        yield guard


@pytest.fixture(autouse=True)
def isolation_guard(_isolation_patches, request):
    """Fails the test if it asked for a socket or a process, even if the exception was caught.
    A test that already failed with ForbiddenInUnitTest is not failed a second time (the
    setup and call reports are the ones tests/conftest.py keeps on each item)."""
    guard = _isolation_patches
    guard.violations.clear()
    yield guard
    found, guard.violations[:] = list(guard.violations), []
    reports = (getattr(request.node, f"rep_{when}", None) for when in ("setup", "call"))
    if found and not any(r is not None and r.failed and ForbiddenInUnitTest.__name__
                         in str(r.longrepr) for r in reports):
        pytest.fail("\n\n".join(found), pytrace=False)
