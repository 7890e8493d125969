"""What is specific to Redis: round trips, memory, accuracy, errors, expiry, clients."""

from __future__ import annotations

import asyncio
import datetime
import socket
import time

import pytest
import redis
import redis.asyncio

from activity_tracker import (
    ActivityTracker,
    AsyncActivityTracker,
    BackendConnectionError,
    CollapseError,
    Estimate,
    WrongKeyTypeError,
)
from activity_tracker.keys import KeySchema, encode_bucket
from activity_tracker.periods import Period
from redis_server import start_redis_server, stop_redis_server

DAY = datetime.date(2024, 1, 10)
NEXT_DAY = DAY + datetime.timedelta(days=1)
ALL_PERIODS = ["daily", "weekly", "monthly", "yearly"]
STANDARD_ERROR = 1.04 / 16384**0.5


class CountingConnection(redis.Connection):
    """Counts what the client sends: each send is one round trip (a pipeline is one send)."""

    sends = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def counting_tracker(redis_url, prefix):
    client = redis.Redis.from_url(redis_url, connection_class=CountingConnection)
    tracker = ActivityTracker(periods=ALL_PERIODS, client=client, prefix=prefix)
    tracker.track(id="warm-up", date=DAY - datetime.timedelta(days=400))  # loads the script
    yield tracker
    client.close()


def round_trips(call):
    before = CountingConnection.sends
    call()
    return CountingConnection.sends - before


def test_track_is_one_round_trip_for_all_periods(counting_tracker):
    assert round_trips(lambda: counting_tracker.track(id=1, bucket="a", date=DAY)) == 1
    move = lambda: counting_tracker.track(  # noqa: E731
        id=2, bucket="b", old_id=1, old_bucket="a", date=DAY
    )
    assert round_trips(move) == 1


def test_lookup_of_a_year_of_days_for_ten_buckets_is_one_round_trip(counting_tracker):
    buckets = [f"b{n}" for n in range(10)]
    start = DAY - datetime.timedelta(days=365)
    for n, bucket in enumerate(buckets):
        counting_tracker.track_daily(id=n, bucket=bucket, date=start)
    counting_tracker.collapse_daily(date=DAY, max_periods=365)
    rows: list = []
    trips = round_trips(
        lambda: rows.extend(counting_tracker.lookup_daily(start=start, end=DAY, buckets=buckets))
    )
    assert trips == 1
    assert len(rows) == 365
    assert rows[0][1] == dict.fromkeys(buckets, 1)
    assert all(counts == dict.fromkeys(buckets, 0) for _, counts in rows[1:])


def test_bucket_day_memory_stays_bounded_and_counts_are_accurate(
    make_tracker, redis_client, prefix
):
    tracker = make_tracker(prefix=prefix)
    client = tracker.backend.client
    period = Period("daily", DAY)
    hll_key = KeySchema(prefix).hll(period, encode_bucket("big"))
    users = [f"user-{n:07d}" for n in range(30_000)]
    # Track through the library for a slice, and fill the rest directly to keep the test fast.
    for user in users[:2_000]:
        tracker.track(id=user, bucket="big", date=DAY)
    for start in range(2_000, len(users), 5_000):
        client.pfadd(hll_key, *users[start : start + 5_000])
    tracker.track(id="x", bucket="small", date=DAY)
    # A thousand logins: sessions moved out of "big" into "auth".
    for n in range(1_000):
        tracker.track(id=f"member-{n}", bucket="auth", old_id=users[n], old_bucket="big", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["big", "auth"]})
    counts = tracker.lookup_daily(start=DAY, end=NEXT_DAY)[0][1]

    for bucket, exact in (("big", 29_000), ("auth", 1_000), ("all", 30_000)):
        # Four standard errors of the HLL (relative to what the sketch holds).
        held = 30_000 if bucket != "auth" else 1_000
        assert abs(counts[bucket] - exact) <= 4 * STANDARD_ERROR * held, (bucket, counts)
    assert counts["small"] == 1
    # A dense HLL is 12,304 bytes; with the key and allocator overhead it stays within 14.4 KiB.
    assert redis_client.memory_usage(hll_key) <= 14.4 * 1024
    assert redis_client.memory_usage(KeySchema(prefix).hll(period, encode_bucket("small"))) < 200


def test_a_key_of_the_wrong_type_is_an_error_and_left_untouched(make_tracker, redis_client, prefix):
    tracker = make_tracker(prefix=prefix)
    schema = KeySchema(prefix)
    period = Period("daily", DAY)
    hll_key = schema.hll(period, encode_bucket("theirs"))
    redis_client.set(hll_key, "someone else's value")
    with pytest.raises(WrongKeyTypeError, match="theirs"):
        tracker.track(id=1, bucket="theirs", date=DAY)
    assert redis_client.get(hll_key) == b"someone else's value"
    assert redis_client.keys(f"{prefix}:*") == [hll_key.encode()]

    redis_client.delete(hll_key)
    tracker.track(id=1, bucket="mine", date=DAY)
    aggregate = schema.hll(period, encode_bucket("agg"))
    redis_client.rpush(aggregate, "x")
    with pytest.raises(CollapseError, match="agg") as caught:
        tracker.collapse(date=NEXT_DAY, aggregate_buckets={"agg": ["mine"]})
    [(failed, error)] = caught.value.failures
    assert failed == period and isinstance(error, WrongKeyTypeError)
    assert redis_client.lrange(aggregate, 0, -1) == [b"x"]
    assert redis_client.exists(schema.counts(period)) == 0

    # What a move reads besides: the period's registry and its change records.
    move = {"id": 2, "bucket": "b", "old_id": 1, "old_bucket": "a", "date": DAY}
    for key in (schema.reg(period), schema.chg(period)):
        for mine in redis_client.scan_iter(match=f"{prefix}:*"):
            redis_client.delete(mine)
        redis_client.set(key, "someone else's value")
        for call in (lambda: tracker.track(**move), lambda: tracker.track_many([move])):
            with pytest.raises(WrongKeyTypeError, match=key.rsplit(":", 1)[1]):
                call()
            assert redis_client.keys(f"{prefix}:*") == [key.encode()]


def test_an_unreachable_redis_raises_the_documented_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    tracker = ActivityTracker(url=f"redis://127.0.0.1:{port}/0", socket_timeout=2)
    with pytest.raises(BackendConnectionError) as caught:
        tracker.track(id=1)
    assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
    assert isinstance(caught.value, ConnectionError)
    with pytest.raises(BackendConnectionError):
        tracker.lookup_daily()


def raw_keys(client: redis.Redis, prefix: str) -> list[bytes]:
    return [k for k in client.scan_iter(match=f"{prefix}:*") if not k.endswith(b":counts")]


def expires_at(client: redis.Redis, key: bytes | str) -> int:
    """The epoch second a key expires at (EXPIRETIME, which Redis 6.2 lacks)."""
    with client.pipeline(transaction=True) as pipe:
        (seconds, micros), ttl = pipe.time().pttl(key).execute()
    assert ttl >= 0, key
    return round((seconds * 1000 + micros / 1000 + ttl) / 1000)


def wait_past(deadline: int) -> None:
    """Sleep until Redis has expired keys whose EXPIREAT is ``deadline``."""
    time.sleep(max(0.0, deadline - time.time()) + 0.1)


def test_raw_keys_expire_after_retention_and_counts_stay(make_tracker, redis_client, prefix):
    tracker = make_tracker(prefix=prefix, retention=1)
    tracker.track(id=1, bucket="a", date=DAY)
    tracker.track(id=2, bucket="b", old_id=1, old_bucket="a", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["a", "b"]})
    schema, period = KeySchema(prefix), Period("daily", DAY)
    deadline = int(redis_client.hget(schema.reg(period), "@deadline"))
    assert deadline <= time.time() + 2  # a past day: its keys live `retention` from its first write
    raw = raw_keys(redis_client, prefix)
    assert len(raw) == 5  # reg, chg, and the sketches of a, b and the aggregate
    assert {expires_at(redis_client, key) for key in raw} == {deadline}
    assert redis_client.ttl(schema.counts(period)) == -1
    assert redis_client.hget(schema.counts(period), "@expires") == str(deadline).encode()
    wait_past(deadline)
    assert raw_keys(redis_client, prefix) == []
    assert tracker.lookup_daily(start=DAY, end=NEXT_DAY) == [(DAY, {"a": 0, "all": 1, "b": 1})]
    # A late event after the deadline starts keys of its own, expiring by themselves; the
    # counts stay final.
    tracker.track(id=3, bucket="a", date=DAY)
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(start=DAY, end=NEXT_DAY) == [(DAY, {"a": 0, "all": 1, "b": 1})]
    assert all(redis_client.ttl(key) > 0 for key in raw_keys(redis_client, prefix))


def test_every_raw_key_has_its_expiry_from_its_first_write(make_tracker, redis_client, prefix):
    tracker = make_tracker(prefix=prefix, periods=["daily", "weekly"])
    schema = KeySchema(prefix)
    # A session tracked the day before logs in: in this day, "anon" only had an id moved out.
    steps = [
        lambda: tracker.track(id="u1", bucket="auth", old_id="s1", old_bucket="anon", date=DAY),
        lambda: tracker.track(id="s1", bucket="web", date=DAY),
        lambda: tracker.track(old_id="s2", old_bucket="gone", date=DAY),
        lambda: tracker.track_many(
            [("u4", "later", "s4", "gone2", DAY), {"id": "u5", "bucket": "new", "date": DAY}]
        ),
        lambda: tracker.collapse(date=NEXT_DAY, aggregate_buckets={"everyone": ["anon", "auth"]}),
        lambda: tracker.track(id="u6", bucket="after", date=DAY),
    ]
    for step in steps:
        step()
        keys = raw_keys(redis_client, prefix)
        assert keys and all(redis_client.ttl(key) > 0 for key in keys)
    # Keys of one period share the deadline the first write fixed.
    for period in (Period("daily", DAY), Period("weekly", datetime.date(2024, 1, 8))):
        deadline = int(redis_client.hget(schema.reg(period), "@deadline"))
        tag = f"{{{period.tag}}}".encode()
        assert {
            expires_at(redis_client, k) for k in raw_keys(redis_client, prefix) if tag in k
        } == {deadline}


def test_live_tracking_expires_retention_after_the_period_ends(redis_url, prefix, redis_client):
    utc = datetime.timezone.utc
    tracker = ActivityTracker(url=redis_url, prefix=prefix, timezone=utc, retention=3600)
    today = datetime.datetime.now(utc).date()
    tracker.track(id=1, date=today)
    key = KeySchema(prefix).reg(Period("daily", today))
    midnight = datetime.datetime.combine(today + datetime.timedelta(days=1), datetime.time(), utc)
    assert expires_at(redis_client, key) == int(midnight.timestamp()) + 3600
    tracker.close()


def test_bad_redis_options(redis_url):
    with pytest.raises(ValueError, match="client"):
        ActivityTracker(url=redis_url, client=redis.Redis.from_url(redis_url))
    with pytest.raises(ValueError, match="client"):
        ActivityTracker(socket_timeout=1, client=redis.Redis.from_url(redis_url))
    with pytest.raises(ValueError, match="retention"):
        ActivityTracker(url=redis_url, retention=0)
    with pytest.raises(ValueError, match="retention=None is no longer accepted"):
        ActivityTracker(url=redis_url, retention=None)
    with pytest.raises(TypeError, match="retention"):
        ActivityTracker(url=redis_url, retention="1d")
    with pytest.raises(ValueError, match="prefix"):
        ActivityTracker(url=redis_url, prefix="a{b}")
    with pytest.raises(ValueError, match="url"):
        ActivityTracker(url=redis_url, host="localhost")
    with pytest.raises(TypeError, match="client"):
        ActivityTracker(client="redis://localhost")
    with pytest.raises(TypeError, match="unknown_option"):
        ActivityTracker(url=redis_url, unknown_option=1)


def test_clients_that_decode_responses_and_host_port_db_options(redis_url, prefix):
    parsed = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    decoding = redis.Redis.from_url(redis_url, decode_responses=True)
    by_client = ActivityTracker(client=decoding, prefix=prefix)
    by_host = ActivityTracker(
        host=parsed["host"], port=parsed["port"], db=parsed.get("db", 0), prefix=prefix
    )
    by_client.track(id=1, bucket="é", date=DAY)
    by_host.track(id=2, bucket="é", date=DAY)
    by_host.collapse(date=NEXT_DAY)
    expected = [(DAY, {"é": 2})]
    assert by_client.lookup_daily(start=DAY, end=NEXT_DAY) == expected
    assert by_host.lookup_daily(start=DAY, end=NEXT_DAY) == expected
    by_client.close()
    assert decoding.ping()  # a client passed in is not closed by the tracker
    decoding.close()


def test_the_default_url_comes_from_the_environment(redis_url, prefix, monkeypatch):
    monkeypatch.setenv("ACTIVITY_TRACKER_URL", redis_url)
    tracker = ActivityTracker(prefix=prefix)
    assert tracker.backend.client.connection_pool.connection_kwargs["port"] == int(
        redis_url.rsplit(":", 1)[1].split("/")[0]
    )


def test_async_tracker_shares_the_semantics(redis_url, prefix):
    async def scenario():
        async with AsyncActivityTracker(
            periods=["daily", "monthly"], url=redis_url, prefix=prefix
        ) as tracker:
            await tracker.track(id="s1", bucket="anon", date=DAY)
            await tracker.track(id="s2", bucket="anon", date=DAY)
            await tracker.track(id=1, bucket="auth", old_id="s2", old_bucket="anon", date=DAY)
            await tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["anon", "auth"]})
            await tracker.collapse_monthly(date=datetime.date(2024, 2, 1))
            daily = await tracker.lookup_daily(start=DAY, end=NEXT_DAY)
            monthly = await tracker.lookup_monthly(
                start=datetime.date(2024, 1, 1), end=datetime.date(2024, 2, 1)
            )
            with pytest.raises(ValueError, match="id"):
                await tracker.track()
            return daily, monthly

    daily, monthly = asyncio.run(scenario())
    assert daily == [(DAY, {"all": 2, "anon": 1, "auth": 1})]
    assert monthly == [(datetime.date(2024, 1, 1), {"anon": 1, "auth": 1})]


def test_async_tracker_takes_an_asyncio_client_and_reports_connection_errors(redis_url, prefix):
    async def scenario():
        client = redis.asyncio.Redis.from_url(redis_url)
        tracker = AsyncActivityTracker(client=client, prefix=prefix)
        await tracker.track(id=1, date=DAY)
        await tracker.collapse(date=NEXT_DAY)
        rows = await tracker.lookup_daily(start=DAY, end=NEXT_DAY)
        await client.aclose()
        unreachable = AsyncActivityTracker(url="redis://127.0.0.1:1/0")
        with pytest.raises(BackendConnectionError):
            await unreachable.track(id=1)
        return rows

    assert asyncio.run(scenario()) == [(DAY, {None: 1})]


def test_a_redis_that_goes_away_raises_the_documented_error(tmp_path):
    process, url = start_redis_server(tmp_path)
    try:
        tracker = ActivityTracker(url=url, socket_timeout=2)
        tracker.track(id=1, date=DAY)
    finally:
        stop_redis_server(process)
    with pytest.raises(BackendConnectionError) as caught:
        tracker.track(id=2, date=DAY)
    assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)


def test_a_corrupt_day_among_thirty_fails_alone_and_is_named_with_its_key(
    make_tracker, redis_client, prefix
):
    tracker = make_tracker(prefix=prefix)
    days = [DAY + datetime.timedelta(days=n) for n in range(30)]
    tracker.track_many((f"u{n}", "web", None, None, day) for n, day in enumerate(days))
    schema = KeySchema(prefix)
    corrupt = schema.hll(Period("daily", days[7]), encode_bucket("web"))
    redis_client.setrange(corrupt, 4, b"\xff")  # an unknown encoding after the "HYLL" magic
    foreign = schema.chg(Period("daily", days[20]))
    redis_client.rpush(foreign, "theirs")
    end = days[-1] + datetime.timedelta(days=1)
    with pytest.raises(CollapseError) as caught:
        tracker.collapse(date=end, max_periods=30)
    assert [period.start for period, _ in caught.value.failures] == [days[7], days[20]]
    message = str(caught.value)
    assert "collapse failed for 2 periods" in message
    assert corrupt in message and foreign in message
    rows = tracker.lookup_daily(start=days[0], end=end)
    assert [counts["web"] for _, counts in rows] == [0 if n in (7, 20) else 1 for n in range(30)]
    assert redis_client.lrange(foreign, 0, -1) == [b"theirs"]


def test_counts_stored_by_1x_are_still_read(make_tracker, redis_client, prefix):
    tracker = make_tracker(prefix=prefix)
    counts = KeySchema(prefix).counts(Period("daily", DAY))
    redis_client.hset(counts, mapping={"b:web": "120", "default": "7", "@expires": "1.5"})
    assert tracker.lookup_daily(start=DAY, end=NEXT_DAY) == [(DAY, {None: 7, "web": 120})]
    [(_, estimates)] = tracker.lookup_daily(start=DAY, end=NEXT_DAY, with_error=True)
    assert estimates["web"] == Estimate(120, 120 * STANDARD_ERROR)


def write_1x_day(client, schema, day, collapsed):
    """What 1.x left of a day: s0..s4 in anon, s1 moved out of anon into auth as u1, and,
    if it collapsed the day, its counts; raw keys without an expiry where it never did."""
    counts = schema.counts(Period("daily", day))
    key = counts.removesuffix("counts")  # 1.x's keys of the day: "{prefix}:{P}:" + a name
    client.pfadd(f"{key}hll:b:anon", *[f"s{n}" for n in range(5)])
    client.pfadd(f"{key}hll:b:auth", "u1")
    client.sadd(f"{key}out:b:anon", "s1")
    client.sadd(f"{key}moved", "s1")
    client.sadd(f"{key}buckets", "b:anon", "b:auth")
    client.sadd(f"{key}left", "b:anon")
    if collapsed:
        expires = time.time() + 35 * 86400
        client.hset(counts, mapping={"b:anon": "4", "b:auth": "1", "@expires": expires})


def test_periods_tracked_by_1x_count_as_the_upgrade_note_says(make_tracker, redis_client, prefix):
    # README, "Upgrading from 1.x": 2.x counts a bucket only once it has tracked into it, from
    # its sketch (1.x's ids included), without 1.x's id changes.
    tracker = make_tracker(prefix=prefix)
    collapsed_by_1x, open_at_upgrade = DAY, NEXT_DAY
    after = NEXT_DAY + datetime.timedelta(days=1)
    write_1x_day(redis_client, tracker.backend.schema, collapsed_by_1x, collapsed=True)
    write_1x_day(redis_client, tracker.backend.schema, open_at_upgrade, collapsed=False)
    buckets = ["anon", "auth"]

    tracker.collapse(date=after, max_periods=2)  # 2.x stores nothing for either day
    assert tracker.lookup_daily(DAY, after, buckets) == [
        (collapsed_by_1x, {"anon": 4, "auth": 1}),
        (open_at_upgrade, {"anon": 0, "auth": 0}),
    ]

    tracker.track(id="late", bucket="anon", date=collapsed_by_1x)
    tracker.track(id="new", bucket="anon", date=open_at_upgrade)
    tracker.collapse(date=after, max_periods=2)
    # anon: s0..s4 (s1, moved out by 1.x, counts again) and the 2.x id; auth as 1.x left it.
    assert tracker.lookup_daily(DAY, after, buckets) == [
        (collapsed_by_1x, {"anon": 6, "auth": 1}),
        (open_at_upgrade, {"anon": 6, "auth": 0}),
    ]
    # The cleanup rule: every raw key 2.x wrote expires; 1.x's sketch of auth, never
    # collapsed, does not.
    sketch = tracker.backend.schema.hll
    assert redis_client.ttl(sketch(Period("daily", open_at_upgrade), "b:anon")) > 0
    assert redis_client.ttl(sketch(Period("daily", open_at_upgrade), "b:auth")) == -1
