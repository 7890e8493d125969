"""The Redis backend: thin sync and asyncio drivers of the operations in :mod:`.redis_plan`."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from .. import timeouts as timeouts_module
from ..arguments import DEFAULT_RETENTION, Activity, CollapseJob, LookupJob
from ..arguments import retention_seconds as _retention_seconds
from ..corrections import Estimate
from ..embedded import embedded_url, is_embedded_url
from ..errors import ActivityTrackerError, BackendConnectionError, StorageError, WrongKeyTypeError
from ..keys import Bucket, KeySchema
from ..unions import Inquiry, T
from . import redis_plan, redis_wire
from .base import AsyncBackend, Backend
from .redis_connections import AsyncIdleConnections, IdleConnections
from .redis_wire import TrackWire

DEFAULT_URL = "redis://localhost:6379/0"
URL_ENVIRONMENT_VARIABLE = "ACTIVITY_TRACKER_URL"
DEFAULT_PREFIX = "activity"
CLUSTER_SCHEME = "redis+cluster://"

_CLUSTER_CLIENTS = (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)


class _RedisOptions:
    """What both drivers share: the options, the key schema and how to reach the server."""

    def __init__(
        self,
        url: str | None,
        host: str | None,
        port: int | None,
        db: int | None,
        socket_connect_timeout: float | None,
        socket_timeout: float | None,
        prefix: str,
        retention: datetime.timedelta | float | None,
    ) -> None:
        self.schema = KeySchema(prefix)
        self.retention = _retention_seconds(retention)
        if url is not None and not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        if url is not None and any(v is not None for v in (host, port, db)):
            raise ValueError("give url= or host=/port=/db=, not both")
        timeouts = (socket_connect_timeout, socket_timeout)
        # With client=, these would be ignored: connect() refuses them.
        self.connection_options_given = any(v is not None for v in (url, host, port, db)) or any(
            v is not timeouts_module.DEFAULT for v in timeouts
        )
        if url is None and all(v is None for v in (host, port, db)):
            url = os.environ.get(URL_ENVIRONMENT_VARIABLE) or DEFAULT_URL
        self.url = url
        self.host, self.port, self.db = host or "localhost", port or 6379, db or 0
        self.socket_connect_timeout, self.socket_timeout = timeouts
        timeouts_module.connection_options(*timeouts)  # checked now, not at the first call

    def connect(self, client: Any, module: Any, client_types: tuple[type, ...]) -> Any:
        """``client`` if given (it must be one of ``client_types``), else a new client from
        ``module`` (``redis`` or ``redis.asyncio``) for these options."""
        if client is not None:
            if self.connection_options_given:
                raise ValueError(
                    "client: give client= or url=/host=/port=/db=/socket_connect_timeout=/"
                    "socket_timeout=, not both"
                )
            if not isinstance(client, client_types):
                names = " or ".join(f"{t.__module__}.{t.__name__}" for t in client_types)
                raise TypeError(f"client must be a {names}, not {type(client).__name__}")
            return client
        with _translated_errors():  # a cluster client connects as it is made
            return self._new_client(module)

    def _new_client(self, module: Any) -> Any:
        cluster = self.url is not None and self.url.startswith(CLUSTER_SCHEME)
        options = timeouts_module.connection_options(
            self.socket_connect_timeout,
            self.socket_timeout,
            asyncio=module is redis.asyncio,
            cluster=cluster,
        )
        if self.url is None:
            return module.Redis(host=self.host, port=self.port, db=self.db, **options)
        if cluster:
            url = "redis://" + self.url[len(CLUSTER_SCHEME) :]
            return module.cluster.RedisCluster.from_url(url, **options)
        url = self.url
        if is_embedded_url(url):
            url = embedded_url(url)  # the embedded server started (or found); its unix:// URL
        try:
            return module.Redis.from_url(url, **options)
        except ValueError as exc:
            raise ValueError(f"url: {exc}") from exc


def _unpipelinable(requests: list[redis_plan.Request], cluster: bool) -> bool:
    """redis-py's cluster pipelines refuse scripts: on a cluster they go one by one."""
    return cluster and any(isinstance(r, redis_plan.ScriptCall) for r in requests)


# Scripts by name: (source, the SHA1 by which EVALSHA names it). Not redis-py's
# register_script(): a pipeline holding its Script objects sends SCRIPT EXISTS before every
# execute (one more round trip for each collapse and read), and its calls cannot be
# pre-encoded (track(), batches). Here a call is an EVALSHA; one the server answers NOSCRIPT
# is sent again after a SCRIPT LOAD.
_Scripts = Mapping[str, tuple[str, str]]


def _with_shas(scripts: Mapping[str, str]) -> _Scripts:
    return {
        name: (source, hashlib.sha1(source.encode("utf-8")).hexdigest())
        for name, source in scripts.items()
    }


_SCRIPTS = _with_shas(redis_plan.SCRIPTS)
_FAKEREDIS_SCRIPTS = _with_shas(redis_plan.FAKEREDIS_SCRIPTS)


def _scripts_for(client: object) -> _Scripts:
    """The scripts for ``client``: a fakeredis client (a test double, which keeps a
    HyperLogLog as a set) gets the variant whose sketch probe takes a set."""
    fake = type(client).__module__.partition(".")[0] == "fakeredis"
    return _FAKEREDIS_SCRIPTS if fake else _SCRIPTS


def _per_event_connections(client: Any) -> Any:
    """The pool's connections that ``track()`` keeps (see :mod:`.redis_connections`), or
    None where it sends through the client: a cluster client (one call per period, routed by
    redis-py), a client bound to one connection, a pool with client-side caching."""
    if isinstance(client, _CLUSTER_CLIENTS) or client.connection is not None:
        return None
    if getattr(client, "single_connection_client", False):  # asyncio: connected on first use
        return None
    pool = client.connection_pool
    if getattr(pool, "cache", None) is not None:
        return None
    if isinstance(client, redis.asyncio.Redis):
        return AsyncIdleConnections(pool)
    return IdleConnections(pool)


def _evalsha_args(call: redis_plan.ScriptCall, scripts: _Scripts) -> tuple[Any, ...]:
    sha = scripts[call.script][1]
    return ("EVALSHA", sha, len(call.keys), *_encoded(call.keys), *call.args)


@functools.lru_cache(maxsize=1024)
def _encoded(keys: tuple[str, ...]) -> tuple[bytes, ...]:
    """Key names as UTF-8, kept: successive track() calls mostly name the same keys, and
    redis-py packs bytes faster than str."""
    return tuple(key.encode("utf-8") for key in keys)


def _command_args(request: redis_plan.Request, scripts: _Scripts) -> tuple[Any, ...]:
    if isinstance(request, redis_plan.Command):
        return request.args
    return _evalsha_args(request, scripts)


def _spread(request: redis_plan.Request) -> redis_plan.Request:
    """``request`` with the ids of each :class:`~.redis_plan.Spread` as arguments of their own."""
    if not isinstance(request, redis_plan.ScriptCall):
        return request
    args: list[Any] = []
    for arg in request.args:
        if isinstance(arg, redis_plan.Spread):
            args += arg.run
        else:
            args.append(arg)
    return dataclasses.replace(request, args=tuple(args))


def _batch_wire(request: redis_plan.Request, scripts: _Scripts) -> tuple[list[bytes], list[bytes]]:
    """A batch's script call as packed bytes, and the ``SCRIPT LOAD`` of its script."""
    assert isinstance(request, redis_plan.ScriptCall)
    source, sha = scripts[request.script]
    return redis_wire.script_call(request, sha), _script_load(source)


@functools.lru_cache(maxsize=8)
def _script_load(source: str) -> list[bytes]:
    return redis_wire.command("SCRIPT", "LOAD", source)


def _unknown_script(reply: object) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError)


def _reply_options(request: redis_plan.Request) -> dict[str, Any]:
    """redis-py options of a request: binary replies are received as bytes."""
    return {redis.client.NEVER_DECODE: True} if request.raw else {}


def _errors_as_replies(request: redis_plan.Request) -> bool:
    return request.errors_as_replies


def _replies(requests: list[redis_plan.Request], replies: list[Any]) -> list[Any]:
    """``replies``, once none is an error but those the requests take as replies (translated
    to this library's errors); the first other error, or a lost connection, is raised."""
    for index, reply in enumerate(replies):
        # A script the server did not know was sent again alone: its error, if any, is
        # already this library's (tolerated).
        if isinstance(reply, Exception) and not isinstance(reply, ActivityTrackerError):
            replies[index] = _tolerated(requests[index], reply)
    return replies


def _tolerated(request: redis_plan.Request, error: Exception) -> Exception:
    """The reply standing for ``error`` if ``request`` takes errors as replies; else raise."""
    if not _errors_as_replies(request) or not isinstance(error, _REDIS_ERRORS):
        raise error
    translated = _translated(error)
    if isinstance(translated, BackendConnectionError):
        raise error
    translated.__cause__ = error
    return translated


_REDIS_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)

# Replies saying the server cannot serve the command now, though it may soon: during a
# failover, while it loads its data, or while a script runs too long.
_UNAVAILABLE = (
    redis.exceptions.ClusterError,  # CLUSTERDOWN "the cluster is down", MASTERDOWN
    redis.exceptions.TryAgainError,  # TRYAGAIN: a slot is being migrated
    redis.exceptions.ReadOnlyError,  # READONLY: a primary that became a replica
)
_UNAVAILABLE_PREFIXES = ("BUSY ", "LOADING ", "MASTERDOWN ", "CLUSTERDOWN ")


def _translated(exc: Exception) -> Exception:
    """This library's exception for one of redis-py's (to be raised ``from`` it): the store
    being unreachable, down or unable to serve now is a :class:`BackendConnectionError`."""
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return BackendConnectionError(f"cannot reach Redis: {_reason(exc)}")
    if isinstance(exc, redis.exceptions.RedisClusterException):  # not a RedisError
        return BackendConnectionError(f"cannot reach the Redis Cluster: {_reason(exc)}")
    if isinstance(exc, _UNAVAILABLE) or str(exc).startswith(_UNAVAILABLE_PREFIXES):
        return BackendConnectionError(f"Redis cannot serve the call now: {_reason(exc)}")
    if isinstance(exc, redis.exceptions.ResponseError):
        message = str(exc)
        if "WRONGTYPE" in message or "HyperLogLog" in message:
            return WrongKeyTypeError(
                f"a key under the tracker's prefix holds other data, left untouched: {message}"
            )
        return StorageError(f"Redis refused a command: {message}")
    return StorageError(f"Redis failed: {exc}")


def _reason(exc: Exception) -> str:
    """What redis-py said, or the name of its exception when it said nothing (a cluster
    refusing a command when it is down says only ``ClusterDownError``)."""
    return str(exc) or type(exc).__name__


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Turn redis-py's exceptions into this library's, keeping them as the cause."""
    try:
        yield
    except _REDIS_ERRORS as exc:
        raise _translated(exc) from exc


_Client = TypeVar("_Client")


class _RedisDriver(Generic[_Client]):
    """What the sync and asyncio drivers hold, set up in one place from the options (see
    :class:`RedisBackend`): the key schema and retention, the client (``client=``, one of
    ``_client_types``, or one made with ``_module``), its scripts, and the per-event path."""

    #: ``redis`` or ``redis.asyncio``: what makes the client when none is given.
    _module: Any
    #: What ``client=`` may be.
    _client_types: tuple[type, ...]

    def __init__(
        self,
        url: str | None = None,
        client: _Client | None = None,
        host: str | None = None,
        port: int | None = None,
        db: int | None = None,
        socket_timeout: float | None = timeouts_module.DEFAULT,
        prefix: str = DEFAULT_PREFIX,
        retention: datetime.timedelta | float = DEFAULT_RETENTION,
        socket_connect_timeout: float | None = timeouts_module.DEFAULT,
    ) -> None:
        options = _RedisOptions(
            url, host, port, db, socket_connect_timeout, socket_timeout, prefix, retention
        )
        self.schema, self.retention = options.schema, options.retention
        self._owns_client = client is None
        self.client: Any = options.connect(client, self._module, self._client_types)
        self._split_periods = isinstance(self.client, _CLUSTER_CLIENTS)
        self._scripts = _scripts_for(self.client)
        self._seen = redis_plan.RecordsSeen()
        self._connections = _per_event_connections(self.client)
        self._wire = TrackWire(self.schema, self.retention, self._scripts["track"])


class RedisBackend(_RedisDriver[redis.Redis | redis.cluster.RedisCluster], Backend):
    """Stores sketches and counts in Redis (``redis.Redis`` or ``redis.cluster.RedisCluster``).

    Options: ``url=`` (``redis://``, ``rediss://``, ``unix://``, or ``redis+cluster://`` for a
    cluster), or ``client=`` (an existing client), or ``host=``/``port=``/``db=`` as in the
    original library; with none of them, ``$ACTIVITY_TRACKER_URL`` or
    ``redis://localhost:6379/0``. ``prefix=`` namespaces the keys (default ``activity``);
    ``retention=`` is how long a period's raw keys live after the later of its end and its
    first write (a timedelta or seconds, default 35 days).
    """

    _module = redis
    _client_types = (redis.Redis, redis.cluster.RedisCluster)
    _connections: IdleConnections | None

    def track(self, activity: Activity) -> None:
        # The per-event path: the call pre-encoded, on a connection kept for it.
        connections = self._connections
        if connections is None:
            self._run(
                redis_plan.track(
                    self.schema, activity, self.retention, time.time(), self._split_periods
                )
            )
            return
        try:
            reply = connections.script(self._wire.packed(activity, time.time()), self._wire.load)
        except _REDIS_ERRORS as exc:
            raise _translated(exc) from exc
        if reply != 0:
            redis_plan.check_track_reply(activity, activity.periods, reply)

    def track_many(self, activities: Iterable[Activity]) -> None:
        operation = redis_plan.track_many(
            self.schema, activities, self.retention, time.time(), self._split_periods, self._seen
        )
        self._run(operation, self._send_batch)

    def collapse(self, job: CollapseJob) -> None:
        self._run(redis_plan.collapse(self.schema, job, self._split_periods))

    def lookup(self, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        return self._run(redis_plan.lookup(self.schema, job))

    def lookup_rolling(self, days: int, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        return self._run(redis_plan.lookup_rolling(self.schema, days, job))

    def unions(self, inquiry: Inquiry[T]) -> T:
        return self._run(redis_plan.unions(self.schema, inquiry, self._split_periods))

    def close(self) -> None:
        if self._connections is not None:
            self._connections.close()
        if self._owns_client:
            self.client.close()

    def _run(
        self,
        operation: redis_plan.Operation[redis_plan.T],
        send: Callable[[list[redis_plan.Request]], list[Any]] | None = None,
    ) -> redis_plan.T:
        send = send or self._send
        try:
            requests = next(operation)
            while True:
                requests = operation.send(send(requests))
        except StopIteration as stop:
            result: redis_plan.T = stop.value
            return result
        except _REDIS_ERRORS as exc:
            raise _translated(exc) from exc

    def _send(self, requests: list[redis_plan.Request]) -> list[Any]:
        """One round trip (a pipeline when there are several requests). Scripts are called by
        SHA; one the server does not know yet is loaded and its call sent again (the requests
        of one round trip are independent of each other, so only the refused ones are)."""
        if len(requests) == 1 or _unpipelinable(requests, self._split_periods):
            return [self._send_tolerated(request) for request in requests]
        with self.client.pipeline(transaction=False) as pipe:
            for request in requests:
                args = _command_args(request, self._scripts)
                pipe.execute_command(*args, **_reply_options(request))
            replies = list(pipe.execute(raise_on_error=False))
        for index, reply in enumerate(replies):
            if _unknown_script(reply):
                replies[index] = self._send_tolerated(requests[index])
        return _replies(requests, replies)

    def _send_batch(self, requests: list[redis_plan.Request]) -> list[Any]:
        """Send ``track_many.lua`` calls: pre-encoded on the per-event connections (a batch's
        ids cost a join of bytes kept per id), else through redis-py, argument by argument."""
        connections = self._connections
        if connections is None:
            return self._send([_spread(request) for request in requests])
        return [connections.script(*_batch_wire(request, self._scripts)) for request in requests]

    def _send_tolerated(self, request: redis_plan.Request) -> Any:
        try:
            return self._send_one(request)
        except _REDIS_ERRORS as exc:
            return _tolerated(request, exc)

    def _send_one(self, request: redis_plan.Request) -> Any:
        options = _reply_options(request)
        if isinstance(request, redis_plan.Command):
            return self.client.execute_command(*request.args, **options)
        try:
            return self.client.execute_command(*_evalsha_args(request, self._scripts), **options)
        except redis.exceptions.NoScriptError:
            self.client.script_load(self._scripts[request.script][0])
            return self.client.execute_command(*_evalsha_args(request, self._scripts), **options)


class AsyncRedisBackend(
    _RedisDriver[redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster], AsyncBackend
):
    """The asyncio twin of :class:`RedisBackend`, with the same options; ``client=`` takes a
    ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``."""

    _module = redis.asyncio
    _client_types = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)
    _connections: AsyncIdleConnections | None

    async def track(self, activity: Activity) -> None:
        connections = self._connections
        if connections is None:
            await self._run(
                redis_plan.track(
                    self.schema, activity, self.retention, time.time(), self._split_periods
                )
            )
            return
        try:
            packed = self._wire.packed(activity, time.time())
            reply = await connections.script(packed, self._wire.load)
        except _REDIS_ERRORS as exc:
            raise _translated(exc) from exc
        if reply != 0:
            redis_plan.check_track_reply(activity, activity.periods, reply)

    async def track_many(self, activities: Iterable[Activity]) -> None:
        operation = redis_plan.track_many(
            self.schema, activities, self.retention, time.time(), self._split_periods, self._seen
        )
        await self._run(operation, self._send_batch)

    async def collapse(self, job: CollapseJob) -> None:
        await self._run(redis_plan.collapse(self.schema, job, self._split_periods))

    async def lookup(self, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        return await self._run(redis_plan.lookup(self.schema, job))

    async def lookup_rolling(self, days: int, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        return await self._run(redis_plan.lookup_rolling(self.schema, days, job))

    async def unions(self, inquiry: Inquiry[T]) -> T:
        return await self._run(redis_plan.unions(self.schema, inquiry, self._split_periods))

    async def close(self) -> None:
        if self._connections is not None:
            await self._connections.close()
        if self._owns_client:
            await self.client.aclose()

    async def _run(
        self,
        operation: redis_plan.Operation[redis_plan.T],
        send: Callable[[list[redis_plan.Request]], Awaitable[list[Any]]] | None = None,
    ) -> redis_plan.T:
        send = send or self._send
        try:
            requests = next(operation)
            while True:
                requests = operation.send(await send(requests))
        except StopIteration as stop:
            result: redis_plan.T = stop.value
            return result
        except _REDIS_ERRORS as exc:
            raise _translated(exc) from exc

    async def _send(self, requests: list[redis_plan.Request]) -> list[Any]:
        """See :meth:`RedisBackend._send`."""
        if len(requests) == 1 or _unpipelinable(requests, self._split_periods):
            return [await self._send_tolerated(request) for request in requests]
        async with self.client.pipeline(transaction=False) as pipe:
            for request in requests:
                args = _command_args(request, self._scripts)
                pipe.execute_command(*args, **_reply_options(request))
            replies = list(await pipe.execute(raise_on_error=False))
        for index, reply in enumerate(replies):
            if _unknown_script(reply):
                replies[index] = await self._send_tolerated(requests[index])
        return _replies(requests, replies)

    async def _send_batch(self, requests: list[redis_plan.Request]) -> list[Any]:
        """See :meth:`RedisBackend._send_batch`."""
        connections = self._connections
        if connections is None:
            return await self._send([_spread(request) for request in requests])
        return [
            await connections.script(*_batch_wire(request, self._scripts)) for request in requests
        ]

    async def _send_tolerated(self, request: redis_plan.Request) -> Any:
        try:
            return await self._send_one(request)
        except _REDIS_ERRORS as exc:
            return _tolerated(request, exc)

    async def _send_one(self, request: redis_plan.Request) -> Any:
        options = _reply_options(request)
        if isinstance(request, redis_plan.Command):
            return await self.client.execute_command(*request.args, **options)
        try:
            return await self.client.execute_command(
                *_evalsha_args(request, self._scripts), **options
            )
        except redis.exceptions.NoScriptError:
            await self.client.script_load(self._scripts[request.script][0])
            return await self.client.execute_command(
                *_evalsha_args(request, self._scripts), **options
            )
