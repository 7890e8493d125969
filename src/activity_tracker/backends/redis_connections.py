"""Connections for the per-event path: a few of a redis-py client's pooled connections, kept
idle between ``track()`` calls, and the sending of pre-encoded commands on them.

For every command, redis-py takes a connection from its pool, polls its socket to check it,
and gives it back: on a round trip of a few tens of microseconds, that costs about as much as
the round trip. :class:`IdleConnections` (and its asyncio twin) borrows connections from the
client's pool as concurrent calls need them and keeps up to :data:`MAX_IDLE` of them between
calls:

- a call takes an idle connection, or borrows one from the pool (connected and checked by
  it), sends its packed command and reads the reply (``send_packed_command`` and
  ``read_response``, so a client's ``connection_class``, RESP2 or RESP3, timeouts and
  health checks apply), then keeps the connection; an error reply leaves it ready for more;
- a connection that failed otherwise (a timeout, a dropped connection, an interruption) goes
  back to the pool, which reconnects it before handing it out again;
- an idle connection the server closed meanwhile (a Redis restart, an idle timeout) fails
  the call that takes it with a connection error, as it would fail the pool's check: the
  call is then sent as redis-py sends any command, on that connection reconnected and under
  its retry policy (the requests sent here, ``track()`` and the batches of ``track_many()``,
  are safe to repeat: tracking the same events again changes nothing);
- a forked child never uses its parent's connections (they are forgotten, not closed), and
  a capped pool lends at most a sixteenth of its connections;
- ``close()`` gives the idle connections back to the pool (so does garbage collection, for
  a sync client).
"""

from __future__ import annotations

import inspect
import os
import weakref
from typing import Any

import redis.exceptions

#: The most connections kept idle between calls: as many calls at once are sent without
#: borrowing from the pool.
MAX_IDLE = 4
#: Of a pool capped at ``max_connections``, at most this share is kept idle here.
_SHARE = 16
#: asyncio's default high-water mark of a transport's write buffer: a request no larger,
#: written to an empty buffer, never makes the writer wait.
_UNWAITED_BYTES = 64 * 1024


class _Idle:
    """What both twins share: the idle connections, for the process that borrowed them."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.limit = min(MAX_IDLE, getattr(pool, "max_connections", 0) // _SHARE)
        # Before redis-py 5.3, get_connection() takes a command name (it ignores it).
        parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
        needs_name = parameter is not None and parameter.default is inspect.Parameter.empty
        self.borrow_args: tuple[str, ...] = ("EVALSHA",) if needs_name else ()
        self.idle: list[Any] = []
        self.pid = os.getpid()

    def take(self) -> Any:
        """An idle connection of this process, or None."""
        if self.pid != os.getpid():
            self.idle.clear()  # the parent's: not ours to use or to close
            self.pid = os.getpid()
        try:
            return self.idle.pop()
        except IndexError:
            return None

    def kept(self, connection: Any) -> bool:
        """Keep ``connection`` idle if there is room; whether it was kept."""
        if len(self.idle) < self.limit:
            self.idle.append(connection)
            return True
        return False

    def give_back(self) -> None:
        """Give the idle connections back to a sync pool."""
        if self.pid == os.getpid():
            while self.idle:
                self.pool.release(self.idle.pop())


class IdleConnections:
    """Idle connections of a ``redis.Redis`` client's pool; thread-safe (see the module)."""

    def __init__(self, pool: Any) -> None:
        self._idle = _Idle(pool)
        weakref.finalize(self, self._idle.give_back)

    def script(self, packed: list[bytes], load: list[bytes]) -> Any:
        """The reply of ``packed``, an ``EVALSHA``; a server that does not know the script
        (a new or restarted one) gets ``load``, its ``SCRIPT LOAD``, on that connection, then
        the call again."""
        try:
            return self.request(packed)
        except redis.exceptions.NoScriptError:
            self.request(load)
            return self.request(packed)

    def request(self, packed: list[bytes]) -> Any:
        """Send one packed command and return its reply (an error reply is raised)."""
        idle = self._idle
        connection = idle.take()
        reused = connection is not None
        if not reused:
            connection = idle.pool.get_connection(*idle.borrow_args)
        try:
            if reused:
                try:
                    connection.send_packed_command(packed)
                    reply = connection.read_response()
                except redis.exceptions.ConnectionError:  # closed while idle: see the module
                    reply = _with_retry(connection, packed)
            else:
                reply = _with_retry(connection, packed)
        except redis.exceptions.ResponseError:
            self._keep(connection)
            raise
        except BaseException:
            idle.pool.release(connection)
            raise
        self._keep(connection)
        return reply

    def _keep(self, connection: Any) -> None:
        if not self._idle.kept(connection):
            self._idle.pool.release(connection)

    def close(self) -> None:
        """Give the idle connections back to the pool."""
        self._idle.give_back()


def _with_retry(connection: Any, packed: list[bytes]) -> Any:
    """Send and read as redis-py does for a command: under the connection's retry policy,
    disconnecting it after each failure."""

    def exchange() -> Any:
        connection.send_packed_command(packed)
        return connection.read_response()

    return connection.retry.call_with_retry(exchange, lambda error: connection.disconnect())


class AsyncIdleConnections:
    """The asyncio twin of :class:`IdleConnections`, for a ``redis.asyncio.Redis`` client."""

    def __init__(self, pool: Any) -> None:
        self._idle = _Idle(pool)

    async def script(self, packed: list[bytes], load: list[bytes]) -> Any:
        """See :meth:`IdleConnections.script`."""
        try:
            return await self.request(packed)
        except redis.exceptions.NoScriptError:
            await self.request(load)
            return await self.request(packed)

    async def request(self, packed: list[bytes]) -> Any:
        """See :meth:`IdleConnections.request`."""
        idle = self._idle
        connection = idle.take()
        reused = connection is not None
        if not reused:
            connection = await idle.pool.get_connection(*idle.borrow_args)
        try:
            if reused:
                try:
                    await _write(connection, packed)
                    reply = await connection.read_response()
                except redis.exceptions.ConnectionError:
                    reply = await _async_with_retry(connection, packed)
            else:
                reply = await _async_with_retry(connection, packed)
        except redis.exceptions.ResponseError:
            await self._keep(connection)
            raise
        except BaseException:
            await idle.pool.release(connection)
            raise
        await self._keep(connection)
        return reply

    async def _keep(self, connection: Any) -> None:
        if not self._idle.kept(connection):
            await self._idle.pool.release(connection)

    async def close(self) -> None:
        """See :meth:`IdleConnections.close`."""
        idle = self._idle
        if idle.pid == os.getpid():
            while idle.idle:
                await idle.pool.release(idle.idle.pop())


async def _write(connection: Any, packed: list[bytes]) -> None:
    """``send_packed_command`` without its write timeout, which redis-py enforces with a
    task per call (``asyncio.wait_for``), costing more than the rest of a ``track()``: a
    request of a few hundred bytes, on a connection with no other request in flight, fits
    in the transport's buffer, so writing it never waits (its reply is read under the
    socket timeout). A larger request (a batch), a connection without redis-py's stream
    writer, or one with health checks, is sent the usual way."""
    writer = getattr(connection, "_writer", None)
    if (
        writer is None
        or connection.health_check_interval
        or sum(map(len, packed)) > _UNWAITED_BYTES
    ):
        await connection.send_packed_command(packed)
        return
    try:
        writer.writelines(packed)
        await writer.drain()
    except OSError as exc:  # as send_packed_command reports it
        await connection.disconnect(nowait=True)
        raise redis.exceptions.ConnectionError(f"Error while writing to socket: {exc}") from exc
    except BaseException:
        await connection.disconnect(nowait=True)
        raise


async def _async_with_retry(connection: Any, packed: list[bytes]) -> Any:
    async def exchange() -> Any:
        await connection.send_packed_command(packed)
        return await connection.read_response()

    async def disconnect(error: Exception) -> None:
        await connection.disconnect()

    return await connection.retry.call_with_retry(exchange, disconnect)
