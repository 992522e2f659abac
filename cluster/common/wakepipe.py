"""WakePipe: how one thread wakes another that sleeps in a ZMQ poll.

A ZMQ socket may be used by one thread only, so a thread with something to send hands it
over (a queue) and writes a byte to this pipe, whose read end the socket's thread polls beside
its sockets. Writes never block (a full pipe means the reader is awake already) and never land
on a closed, perhaps reused, descriptor.
"""
from __future__ import annotations

import contextlib
import os
import threading


class WakePipe:
    def __init__(self):
        self.fd, self._w = os.pipe()     # fd: the read end, to register with a zmq.Poller
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)
        self._lock = threading.Lock()

    def wake(self) -> None:
        with self._lock:
            if self._w < 0:
                return
            with contextlib.suppress(BlockingIOError):   # full: the reader is awake already
                os.write(self._w, b"\0")

    def drain(self, events: dict) -> None:
        """After a poll: empty the pipe if `events` says it was readable."""
        if self.fd not in events:
            return
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._w < 0:
                return
            os.close(self.fd)
            os.close(self._w)
            self._w = -1
