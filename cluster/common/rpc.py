"""gRPC plumbing every node and client shares: channel and server options, the health
service, and the decorator that turns server-side exceptions into status codes.

Messages carry whole chunks (4 MiB by default, up to 64 MiB), so both directions raise gRPC's
4 MiB default limit to MAX_MESSAGE.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cluster.common.errors import FsError, fserror_from_rpc
from cluster.common.fid import BadFid
from protos import volume_pb2_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE = 80 * 1024 * 1024  # a 64 MiB chunk plus its envelope

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 0),
    # A restarted peer should be retried within a second, not after gRPC's default backoff
    # of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# Servers additionally refuse to share a port (gRPC enables SO_REUSEPORT by default, which
# would let a second master bind the first one's port without an error).
SERVER_OPTIONS = [*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0),
                  # Calls in flight per connection (HTTP/2 streams): a peer that opens more
                  # waits on its side for one to finish, so what one connection can have
                  # running or queued on a server is bounded.
                  ("grpc.max_concurrent_streams", 64)]


def channel(address: str) -> grpc.Channel:
    """A long-lived insecure channel to host:port (loopback and trusted LANs only)."""
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


class ChannelCache:
    """One long-lived channel per peer address, shared by all threads (never one per call).

    `reset(address)` drops a channel stuck in reconnect backoff, e.g. when the peer just
    re-registered after a restart, so the next call connects at once.
    """

    def __init__(self, factory: Callable[[str], grpc.Channel] | None = None):
        self._factory = factory or channel
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, type], object] = {}

    def channel(self, address: str) -> grpc.Channel:
        with self._lock:
            ch = self._channels.get(address)
            if ch is None:
                ch = self._channels[address] = self._factory(address)
            return ch

    def stub(self, address: str, stub_class: type):
        key = (address, stub_class)
        stub = self._stubs.get(key)
        if stub is None:
            stub = stub_class(self.channel(address))
            with self._lock:
                self._stubs[key] = stub
        return stub

    def preset(self, address: str, stub_class: type, stub: object) -> None:
        """Use `stub` for `address` from now on; no channel is made for it (a stand-in)."""
        with self._lock:
            self._stubs[(address, stub_class)] = stub

    def reset(self, address: str) -> None:
        with self._lock:
            ch = self._channels.pop(address, None)
            for key in [k for k in self._stubs if k[0] == address]:
                del self._stubs[key]
        if ch is not None:
            ch.close()

    def close(self) -> None:
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
            self._stubs.clear()
        for ch in channels:
            ch.close()


class VolumeStubs(ChannelCache):
    """Volume-server stubs over cached channels: what the master (allocation, reaper) and
    the mount's reader both need."""

    def get(self, address: str) -> volume_pb2_grpc.VolumeStub:
        return self.stub(address, volume_pb2_grpc.VolumeStub)


def make_server(max_workers: int = 16, interceptors: Sequence[grpc.ServerInterceptor] = ()
                ) -> tuple[grpc.Server, health.HealthServicer]:
    """A gRPC server with the health service; `interceptors` run before every method (the
    role check of a secure server, cluster/common/tls.py)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        options=SERVER_OPTIONS, interceptors=list(interceptors),
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer


class _Undecodable:
    """What a request that does not parse becomes, so the method can answer INVALID_ARGUMENT
    (grpcio itself would answer INTERNAL, "Exception deserializing request!")."""

    def __init__(self, reason: str):
        self.reason = reason


def _safe_deserializer(parse: Callable) -> Callable:
    def deserialize(raw: bytes):
        try:
            return parse(raw)
        except Exception as e:
            return _Undecodable(f"{type(e).__name__}: {e}")
    return deserialize


def _refuse(context, request: _Undecodable):
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"EINVAL: undecodable request "
                                                    f"({request.reason})")


def _guarded(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if handler.request_streaming or handler.request_deserializer is None:
        return handler
    if handler.response_streaming:
        inner = handler.unary_stream

        def unary_stream(request, context):
            if isinstance(request, _Undecodable):
                _refuse(context, request)
            yield from inner(request, context)

        return handler._replace(request_deserializer=_safe_deserializer(
            handler.request_deserializer), unary_stream=unary_stream)
    inner_uu = handler.unary_unary

    def unary_unary(request, context):
        if isinstance(request, _Undecodable):
            _refuse(context, request)
        return inner_uu(request, context)

    return handler._replace(request_deserializer=_safe_deserializer(
        handler.request_deserializer), unary_unary=unary_unary)


class _GuardingRegistrar:
    """Stands in for the server while generated `add_*Servicer_to_server` code registers its
    handlers, and registers guarded copies on the real server instead."""

    def __init__(self, server: grpc.Server):
        self._server = server

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass  # the same handlers arrive through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        guarded = {name: _guarded(h) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, guarded),))
        self._server.add_registered_method_handlers(service, guarded)


def add_servicer(server: grpc.Server, add_fn: Callable, servicer) -> None:
    """`add_fn(servicer, server)` (generated code), with every request deserializer guarded:
    bytes that are not the request message are INVALID_ARGUMENT, not INTERNAL."""
    add_fn(servicer, _GuardingRegistrar(server))


def bind(server: grpc.Server, host: str, port: int) -> int:
    """Bind host:port (port 0 = any free port) and return the port bound."""
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port} (in use?)")
    return bound


def set_serving(health_servicer: health.HealthServicer, service: str = "") -> None:
    health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)


def check_health(address: str, timeout: float = 1.0,
                 channel_factory: Callable[[str], grpc.Channel] | None = None) -> bool:
    """Whether the server at `address` answers SERVING (over `channel_factory`'s channel,
    a secure one for a secure cluster)."""
    try:
        with (channel_factory or channel)(address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def servicer_method(fn: Callable) -> Callable:
    """Wrap a servicer method: FsError and bad input become status codes, never tracebacks
    on the wire; unexpected exceptions are logged and answered INTERNAL."""

    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except FsError as e:
            context.abort(e.status(), e.status_message())
        except BadFid as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"EINVAL: {e}")
        except grpc.RpcError as e:
            _abort_for_peer_failure(context, e)
        except OverflowError as e:  # a number past what storage holds (SQLite: 2^63)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"EINVAL: value out of range ({e})")
        except Exception as e:
            if _is_abort(e):
                raise
            log.exception("%s failed", fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"EIO: {type(e).__name__}: {e}")

    return wrapper


def _is_abort(e: BaseException) -> bool:
    """grpcio's context.abort() raises a bare Exception() once the status is set."""
    return type(e) is Exception and not e.args


def _abort_for_peer_failure(context, e: grpc.RpcError) -> None:
    """A call this method made to another node failed: answer with its errno and status
    (UNAVAILABLE for an unreachable peer), never grpcio's UNKNOWN."""
    err = fserror_from_rpc(e)
    context.abort(err.status(), f"{err.name}: peer failed: {err.message}")


def streaming_servicer_method(fn: Callable) -> Callable:
    """servicer_method for server-streaming methods (generators)."""

    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            yield from fn(self, request, context)
        except FsError as e:
            context.abort(e.status(), e.status_message())
        except grpc.RpcError as e:
            _abort_for_peer_failure(context, e)
        except OverflowError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"EINVAL: value out of range ({e})")
        except Exception as e:
            if _is_abort(e):
                raise
            log.exception("%s failed", fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"EIO: {type(e).__name__}: {e}")

    return wrapper


class StoppableThread(threading.Thread):
    """A named background activity with start() and stop(), looping every `interval` s."""

    def __init__(self, name: str, interval: float, step: Callable[[], None]):
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self._step = step
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._step()
            except Exception:
                log.exception("%s: step failed", self.name)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()

    def wake_after(self, seconds: float) -> bool:
        return self._stop_event.wait(seconds)
