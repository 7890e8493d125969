"""``check``: can this Redis be trusted with counts? Its version, persistence and memory
policy, and a warning (exit status 1) wherever counts are at risk.

Gathering (:func:`gather`) asks the server with ``INFO`` and, where allowed, ``CONFIG GET``;
judging (:func:`assess`) is pure, so every rule is tested with plain data. Managed services
(ElastiCache, Memorystore, Azure Cache, Upstash...) usually disable ``CONFIG``: then the
RDB schedule is unknown, which is said, not guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import click
import redis
import redis.cluster

from .settings import Settings, open_tracker

OK, NOTE, WARNING = "ok", "note", "warning"

#: The first release of each line carrying the fix for CVE-2025-32023 (an out-of-bounds write
#: in the HyperLogLog commands): Redis 6.2.19, 7.2.10, 7.4.5 and 8.0.3, released in July
#: 2025; 8.2 and later lines have it from their first release.
CVE_2025_32023_FIXED: dict[tuple[int, ...], tuple[int, ...]] = {
    (6, 2): (6, 2, 19),
    (7, 2): (7, 2, 10),
    (7, 4): (7, 4, 5),
    (8, 0): (8, 0, 3),
}
_FIXED_FROM_LINE = (8, 2)
_OLDEST_SUPPORTED = (6, 2)
_UPGRADE = "6.2.19, 7.2.10, 7.4.5, 8.0.3 or a later release of those lines, or 8.2+"


@dataclass(frozen=True)
class ServerFacts:
    """What one server says about itself; ``None`` where it would not say."""

    where: str
    product: str  # "Redis" or "Valkey"
    version: str
    save: str | None  # the RDB schedule ("" for none); None when CONFIG is disabled
    config_refused: str | None  # why CONFIG GET failed, if it did
    aof_enabled: bool
    maxmemory: int
    policy: str
    used_memory: str


@dataclass(frozen=True)
class Finding:
    level: str  # OK, NOTE or WARNING
    topic: str
    text: str


def gather(client: Any, where: str) -> ServerFacts:
    """Ask ``client`` (a ``redis.Redis``) about itself."""
    server = client.info("server")
    persistence = client.info("persistence")
    memory = client.info("memory")
    save: str | None = None
    refused: str | None = None
    try:
        save = _decoded(client.config_get("save").get("save", ""))
    except redis.ResponseError as exc:  # renamed, disabled or not allowed (ACL)
        refused = str(exc)
    valkey = "valkey_version" in server
    return ServerFacts(
        where=where,
        product="Valkey" if valkey else "Redis",
        version=str(server["valkey_version" if valkey else "redis_version"]),
        save=save,
        config_refused=refused,
        aof_enabled=bool(int(persistence.get("aof_enabled", 0))),
        maxmemory=int(memory.get("maxmemory", 0)),
        policy=str(memory.get("maxmemory_policy", "unknown")),
        used_memory=str(memory.get("used_memory_human", "?")),
    )


def _decoded(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def has_cve_2025_32023_fix(version: str) -> bool:
    """Whether Redis ``version`` carries the fix for CVE-2025-32023."""
    numbers = _version(version)
    if numbers[:2] >= _FIXED_FROM_LINE:
        return True
    fixed = CVE_2025_32023_FIXED.get(numbers[:2])
    return fixed is not None and numbers >= fixed


def assess(facts: ServerFacts, local_only: bool = False) -> list[Finding]:
    """What ``facts`` mean for the counts kept there. ``local_only``: the server is the
    embedded one, reachable only by this user through a unix socket."""
    return [*_version_findings(facts, local_only), *_persistence(facts), *_memory(facts)]


def _version_findings(facts: ServerFacts, local_only: bool) -> Iterable[Finding]:
    topic = "version"
    if facts.product != "Redis":
        yield Finding(
            NOTE,
            topic,
            f"{facts.product} {facts.version}: check its release notes for the fix of "
            "CVE-2025-32023 (HyperLogLog out-of-bounds write)",
        )
        return
    if _version(facts.version)[:2] < _OLDEST_SUPPORTED:
        yield Finding(WARNING, topic, f"Redis {facts.version} is older than 6.2, which is needed")
    if has_cve_2025_32023_fix(facts.version):
        yield Finding(OK, topic, f"Redis {facts.version} has the HyperLogLog fixes")
        return
    text = (
        f"Redis {facts.version} lacks the fix for CVE-2025-32023: a client can corrupt memory "
        f"with a crafted HyperLogLog; upgrade to {_UPGRADE}"
    )
    if local_only:
        yield Finding(NOTE, topic, text + " (this server is reachable only by you)")
    else:
        yield Finding(WARNING, topic, text)


def _persistence(facts: ServerFacts) -> Iterable[Finding]:
    topic = "persistence"
    if facts.aof_enabled:
        yield Finding(OK, topic, "AOF on: a restart replays the logged writes")
        if facts.save:
            yield Finding(OK, topic, f"RDB snapshots too (save {facts.save})")
        return
    if facts.save:
        yield Finding(
            OK,
            topic,
            f"RDB snapshots (save {facts.save}), AOF off: a crash loses the writes since the last "
            "snapshot; turn on AOF (appendonly yes) to lose at most a second",
        )
        return
    if facts.save == "":
        yield Finding(
            WARNING,
            topic,
            "no persistence (no RDB snapshots, AOF off): a restart loses every sketch and count; "
            "set save or appendonly yes",
        )
        return
    yield Finding(
        NOTE,
        topic,
        f"AOF off; the RDB schedule is unknown: CONFIG is disabled here ({facts.config_refused}), "
        "as on most managed services. Check with your provider that the data is persisted: "
        "without persistence a restart loses every sketch and count",
    )


def _memory(facts: ServerFacts) -> Iterable[Finding]:
    topic = "memory"
    used = f"using {facts.used_memory}"
    if facts.maxmemory == 0:
        yield Finding(
            NOTE,
            topic,
            f"no maxmemory ({used}): Redis grows until the machine runs out; size it from the "
            "README's Running in production",
        )
        return
    limit = f"maxmemory {facts.maxmemory:,} bytes, {used}"
    if facts.policy == "noeviction":
        yield Finding(
            OK, topic, f"{limit}, policy noeviction: when full, writes fail with an error"
        )
    elif facts.policy.startswith("allkeys-"):
        yield Finding(
            WARNING,
            topic,
            f"{limit}, policy {facts.policy}: when full, Redis silently evicts any key, sketches "
            "and collapsed counts included; use noeviction",
        )
    elif facts.policy.startswith("volatile-"):
        yield Finding(
            WARNING,
            topic,
            f"{limit}, policy {facts.policy}: when full, Redis silently evicts keys with an "
            "expiry, and every raw key (sketches, id-change records) has one; use noeviction",
        )
    else:
        yield Finding(NOTE, topic, f"{limit}, policy {facts.policy}")


def nodes(client: Any, where: str) -> list[tuple[str, Any]]:
    """The servers behind ``client`` and where they are: itself (at ``where``), or every
    primary of a cluster."""
    if isinstance(client, redis.cluster.RedisCluster):
        cluster: Any = client  # redis-py's cluster methods are not typed
        return [
            (f"node {node.name}", cluster.get_redis_connection(node))
            for node in cluster.get_primaries()
        ]
    return [(where, client)]


@click.command()
@click.pass_obj
def check(settings: Settings) -> None:
    """Check that the store can be trusted with counts: its Redis version (the fix of
    CVE-2025-32023 in the HyperLogLog commands), persistence (RDB, AOF) and maxmemory-policy.

    Exit status 1 when counts are at risk: no persistence (a restart loses everything), an
    eviction policy that can drop sketches (allkeys-*, volatile-*), a Redis without the fix.
    On managed services that disable CONFIG, what cannot be read is said, not guessed.
    """
    described = settings.describe().removeprefix("Redis at ")
    local_only = described.startswith("embedded store")
    with open_tracker(settings, existing=True) as tracker:
        try:
            found = [
                gather(server, where) for where, server in nodes(tracker.backend.client, described)
            ]
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise click.ClickException(f"cannot read the server's state: {exc}") from exc
    warnings = 0
    for facts in found:
        click.echo(f"{facts.product} {facts.version}, {facts.where}")
        for finding in assess(facts, local_only):
            warnings += finding.level == WARNING
            click.echo(f"  {finding.level:<8} {finding.topic:<12} {finding.text}")
    if warnings:
        raise click.ClickException(
            f"{warnings} warning{'s' if warnings != 1 else ''}: counts are at risk (see above)"
        )
