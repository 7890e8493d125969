"""How long the library waits for Redis: the defaults of every client it makes, and the
retry policy that makes their sum a bound.

Every client this library creates (sync, asyncio, cluster, embedded, the command line) waits
at most ``socket_connect_timeout`` for a connection and ``socket_timeout`` for each reply,
and redis-py's own retries are turned off (from redis-py 6 on, a client retries a timed-out
command three times with a backoff of up to 10 s by default, which would multiply every wait
by four and more). So a call to a Redis that cannot be reached or stops answering raises
within ``socket_connect_timeout + socket_timeout`` (7 s by default). A pooled connection the
server closed while it was idle is replaced by redis-py before it is used, so turning
retries off costs no call in that case.

A cluster client also re-reads the cluster's layout after a connection error, from each
known node in turn until one answers: on a cluster the bound is that sum once for the
command and once per node.
"""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio.retry
import redis.retry
from redis.backoff import NoBackoff

#: Seconds to wait for a TCP (or unix socket) connection to Redis.
DEFAULT_SOCKET_CONNECT_TIMEOUT = 2.0
#: Seconds to wait for each reply of Redis.
DEFAULT_SOCKET_TIMEOUT = 5.0


class _Default:
    """The type of :data:`DEFAULT`."""

    def __repr__(self) -> str:
        return "DEFAULT"


#: "Not given": use the library's default. ``None`` means "wait for ever", and only when
#: asked for.
DEFAULT: Any = _Default()


def connection_options(
    socket_connect_timeout: float | None = DEFAULT,
    socket_timeout: float | None = DEFAULT,
    asyncio: bool = False,
) -> dict[str, Any]:
    """The keyword arguments giving a redis-py client (``redis.Redis``,
    ``redis.asyncio.Redis``, their cluster twins and ``from_url``) these timeouts and no
    retries; :data:`DEFAULT` stands for the library's defaults."""
    if socket_connect_timeout is DEFAULT:
        socket_connect_timeout = DEFAULT_SOCKET_CONNECT_TIMEOUT
    if socket_timeout is DEFAULT:
        socket_timeout = DEFAULT_SOCKET_TIMEOUT
    retry_class = redis.asyncio.retry.Retry if asyncio else redis.retry.Retry
    return {
        "socket_connect_timeout": _seconds(socket_connect_timeout, "socket_connect_timeout"),
        "socket_timeout": _seconds(socket_timeout, "socket_timeout"),
        "retry": retry_class(NoBackoff(), 0),
    }


def _seconds(value: object, argument: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{argument} must be a number of seconds or None, not {type(value).__name__}"
        )
    if not 0 < value < math.inf:
        raise ValueError(f"{argument} must be positive (or None to wait for ever), not {value!r}")
    return float(value)
