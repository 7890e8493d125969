"""How long the library waits for Redis: the defaults of every client it makes, and the
retry policy that makes their sum a bound.

Every client this library creates (sync, asyncio, cluster, embedded, the command line) waits
at most ``socket_connect_timeout`` for a connection and ``socket_timeout`` for each reply,
and retries only a connection that dropped, once, at once (a Redis restarted or a connection
closed while idle then costs no call). redis-py's own retry policy is replaced: depending on
its version and on how a client is made, it retries a timed-out command too (redis-py 8's
``redis.Redis(host=...)`` 10 times, with a backoff of up to 1 s), which multiplies every wait
by eleven and more.

So a call to a Redis that cannot be reached or stops answering raises within
``socket_connect_timeout + socket_timeout`` (7 s by default), and within twice that if the
connection also dropped just before. A cluster client does not retry at all, but after a
connection error redis-py re-reads the cluster's layout from each known node in turn until
one answers: on a cluster the bound is ``(1 + nodes) * (socket_connect_timeout +
socket_timeout)``.
"""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio.retry
import redis.exceptions
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
    *,
    asyncio: bool = False,
    cluster: bool = False,
) -> dict[str, Any]:
    """The keyword arguments giving a redis-py client (``redis.Redis``,
    ``redis.asyncio.Redis``, their cluster twins and ``from_url``) these timeouts and the
    library's retry policy; :data:`DEFAULT` stands for the library's defaults."""
    if socket_connect_timeout is DEFAULT:
        socket_connect_timeout = DEFAULT_SOCKET_CONNECT_TIMEOUT
    if socket_timeout is DEFAULT:
        socket_timeout = DEFAULT_SOCKET_TIMEOUT
    retry_class = redis.asyncio.retry.Retry if asyncio else redis.retry.Retry
    # A cluster client's retries are of the whole call, timeouts included: none.
    retry = retry_class(NoBackoff(), 0 if cluster else 1, (redis.exceptions.ConnectionError,))
    return {
        "socket_connect_timeout": _seconds(socket_connect_timeout, "socket_connect_timeout"),
        "socket_timeout": _seconds(socket_timeout, "socket_timeout"),
        "retry": retry,
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
