"""The batch path (``track_many``, ``batch()``) and ``BufferedTracker``: arguments, errors,
round trips, de-duplication, asyncio, threads. Exactness under random sequences is
``test_batch_model.py``'s job."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import threading
import time

import pytest
import redis

from activity_tracker import (
    ActivityTracker,
    AsyncActivityTracker,
    Backend,
    BackendConnectionError,
    BufferedTracker,
    WrongKeyTypeError,
)
from activity_tracker.arguments import Activity
from activity_tracker.backends import redis_plan
from activity_tracker.batch import ActivityChecker, PendingEvents
from activity_tracker.keys import KeySchema, encode_bucket, id_hash
from activity_tracker.periods import Period
from redis_server import close_connections_named
from test_redis_backend import CountingConnection, round_trips

DAY = datetime.date(2024, 1, 10)
NEXT_DAY = DAY + datetime.timedelta(days=1)
ONE_DAY = {"start": DAY, "end": NEXT_DAY}
USERS = [f"user-{n}" for n in range(10)]  # a p=14 HLL counts these exactly


def counts_on(tracker: ActivityTracker) -> dict[object, int]:
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["anon", "auth"]})
    [(_, counts)] = tracker.lookup_daily(**ONE_DAY)
    return counts


LOGIN_STORY = [
    {"id": "s1", "bucket": "anon", "date": DAY},
    ("s2", "anon", None, None, DAY),
    {"id": "s2", "bucket": "anon", "date": DAY},
    {"id": 1, "bucket": "auth", "old_id": "s2", "old_bucket": "anon", "date": DAY},
    (2, "auth", None, None, DAY, ["daily"]),
    {"old_id": "s1", "old_bucket": "anon", "date": DAY},
    {"id": "s1", "bucket": "anon", "date": DAY},
]


def test_track_many_counts_like_track_one_by_one(make_tracker):
    one, many = make_tracker(), make_tracker()
    for event in LOGIN_STORY:
        if isinstance(event, dict):
            one.track(**event)
        else:
            one.track(*event)
    assert many.track_many(iter(LOGIN_STORY)) == len(LOGIN_STORY)
    assert counts_on(many) == counts_on(one) == {"anon": 1, "auth": 2, "all": 3}


def test_a_batch_sends_when_full_and_when_the_block_ends(make_tracker):
    tracker = make_tracker()
    with tracker.batch(max_events=3) as batch:
        for user in USERS[:4]:
            batch.track(id=user, bucket="anon", date=DAY)
        assert batch.pending == 1  # three were sent
    assert batch.pending == 0
    assert counts_on(tracker)["anon"] == 4


def test_bad_events_name_their_index_and_the_events_before_are_recorded(make_tracker):
    tracker = make_tracker()
    events = [{"id": "a", "date": DAY}, {"id": "b", "date": DAY}, {"id": "c", "bucket": 5}]
    with pytest.raises(TypeError, match=r"events\[2\]: bucket must be a str"):
        tracker.track_many(events)
    with pytest.raises(TypeError, match=r"events\[0\]: unknown key\(s\) user"):
        tracker.track_many([{"user": 1}])
    with pytest.raises(ValueError, match=r"events\[1\]: track\(\) needs id"):
        tracker.track_many([("d",), (None, "x")])
    with pytest.raises(TypeError, match=r"events\[0\]: an event must be a dict"):
        tracker.track_many(["user-1"])
    with pytest.raises(TypeError, match=r"events\[0\]: an event tuple has at most 6"):
        tracker.track_many([(1, None, None, None, DAY, None, "extra")])
    with pytest.raises(ValueError, match=r"events\[1\]: id: .* is not valid unicode text"):
        tracker.track_many([{"id": "e", "date": DAY}, {"id": "\ud800", "date": DAY}])
    with pytest.raises(TypeError, match="date"):
        tracker.batch().track(id=1, date="2024-01-10")
    with pytest.raises(ValueError, match="max_events"):
        tracker.batch(max_events=0)
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(**ONE_DAY) == [(DAY, {None: 3})]


def test_the_default_backend_batch_is_track_in_order():
    seen: list[Activity] = []

    class Recorder(Backend):
        def track(self, activity):
            seen.append(activity)

        def collapse(self, job):
            raise NotImplementedError

        def lookup(self, job):
            raise NotImplementedError

    tracker = ActivityTracker(backend=Recorder())
    tracker.track_many([("a", None, None, None, DAY), ("b", "web", "a", None, DAY)])
    assert [(a.id, a.bucket, a.old_id) for a in seen] == [("a", None, None), ("b", "web", "a")]


def test_a_user_seen_fifty_times_costs_one_element():
    schema = KeySchema("p")
    day = Period("daily", DAY)
    end = 1_704_931_200.0
    events = [Activity((day,), (end,), "heavy", "web", None, None)] * 50
    events.append(Activity((day,), (end,), "light", "web", None, None))
    [call] = next(redis_plan.track_many(schema, events, retention=100, now=end - 10))
    # One run of 2 ids; then the section: the deadline, one bucket "web" (ids added to it)
    # taking run 1, no hashes to check (a day never seen is guessed to have no id changes:
    # 0), no entries.
    runs, count, spread, deadline, buckets, code, flags, taken, run, checks, known, entries = (
        call.args
    )
    assert (runs, count, deadline, buckets, code, flags) == (1, 2, end + 100, 1, "b:web", 1)
    assert (taken, run, checks, known, entries) == (1, 1, b"", 0, 0)
    assert sorted(spread.run) == ["heavy", "light"]
    keys = (schema.batch_scratch(day), schema.reg(day), schema.chg(day), schema.hll(day, "b:web"))
    assert call.keys == keys
    # Each id is one argument, RESP-encoded once, whatever it holds.
    assert sorted(spread.run.encoded().split(b"\r\n$")) in (
        [b"$5\r\nheavy", b"5\r\nlight\r\n"],
        [b"$5\r\nlight", b"5\r\nheavy\r\n"],
    )


def test_the_ids_of_a_day_are_sent_once_for_all_its_periods():
    schema = KeySchema("p")
    day, month = Period("daily", DAY), Period("monthly", DAY.replace(day=1))
    pending = PendingEvents()
    checker = ActivityChecker(("daily", "monthly"), None)
    checker.extend(pending, iter([(f"u{n}", "web", None, None, DAY) for n in range(3)]), 0, 100)
    [call] = next(redis_plan.track_many(schema, pending.take(), retention=100, now=0.0))
    assert call.args[0] == 1  # one run ...
    assert sorted(call.args[2].run) == ["u0", "u1", "u2"]
    assert call.keys[1::3] == (schema.reg(day), schema.reg(month))
    daily, monthly = call.args[3:12], call.args[12:]
    assert daily[2:6] == monthly[2:6] == ("b:web", 1, 1, 1)  # ... taken by both periods


def test_ids_moved_in_a_batch_send_their_last_operation_per_bucket():
    schema = KeySchema("p")
    day = Period("daily", DAY)
    events = [
        Activity((day,), (0.0,), "s1", "anon", None, None),  # added before its move: checked
        Activity((day,), (0.0,), "u1", "auth", "s1", "anon"),
        Activity((day,), (0.0,), "s1", "auth", None, None),  # after its move: BACK in auth
    ]
    [call] = next(redis_plan.track_many(schema, events, retention=100, now=0.0))
    assert call.args[0] == 2  # anon's ids, auth's ids
    assert (sorted(call.args[2].run), sorted(call.args[4].run)) == (["s1"], ["s1", "u1"])
    anon, auth = call.args[7:12], call.args[12:17]
    assert anon == ("b:anon", 3, 1, 1, b"")  # added and moved out of; s1 moved: no check
    assert auth == ("b:auth", 1, 1, 2, b"")  # u1 is never moved in the batch, and ...
    # s1: added to anon (bucket 0) before its first move, then OUT of anon, BACK in auth (1).
    entry = id_hash("s1") + bytes([0, 0, 0, 0, 0, 1, 0, 0, 6])
    assert call.args[17:] == (0, 1, entry)  # ... the day is guessed to have no id changes
    # Sent again with every hash to check (the guess was wrong):
    [again] = operation_send(redis_plan.track_many(schema, events, 100, 0.0), [2, 1])
    assert again.args[12:17] == ("b:auth", 1, 1, 2, id_hash("u1"))
    assert again.args[17:] == (-1, 1, entry)


def test_a_batch_sends_only_the_ids_known_to_have_records():
    schema = KeySchema("p")
    day = Period("daily", DAY)
    seen = redis_plan.RecordsSeen()
    login = [Activity((day,), (0.0,), "u1", "auth", "s1", "anon")]
    operation = redis_plan.track_many(schema, login, retention=100, now=0.0, seen=seen)
    [call] = next(operation)
    assert call.args[-3] == 0  # a day never seen: no id is guessed to have records
    with pytest.raises(StopIteration):
        operation.send([[0, 1]])  # written; the day has 1 id with records
    assert seen.get(day) == (1, frozenset({"s1"}))
    # Next batch: no hashes to check, the number of ids with records it relies on, and an
    # entry for s1 (added to bucket 0 with records).
    events = [Activity((day,), (0.0,), id, "anon", None, None) for id in ("s1", "x", "y")]
    operation = redis_plan.track_many(schema, events, retention=100, now=0.0, seen=seen)
    [call] = next(operation)
    assert call.args[9:] == (b"", 1, 1, id_hash("s1") + bytes(3))
    # The day changed since (another client): the call writes nothing and is sent again,
    # checking every hash, as are later batches of that day.
    [again] = operation.send([[2, 1]])
    assert len(again.args[9]) == 3 * 8 and again.args[10:] == (-1, 0)
    assert seen.get(day) is None


def operation_send(operation, reply):
    """The requests ``operation`` sends after its first ones get ``[reply]``."""
    next(operation)
    return operation.send([reply])


@pytest.mark.redis_only
def test_a_batch_after_another_clients_id_changes_is_sent_again_and_stays_exact(
    redis_url, prefix, make_tracker
):
    client = redis.Redis.from_url(redis_url, connection_class=CountingConnection)
    mine = ActivityTracker(client=client, prefix=prefix)
    theirs = make_tracker(prefix=prefix)
    one = make_tracker(prefix=f"{prefix}:one")  # under the prefix the test deletes
    for tracker in (mine, one):
        tracker.track_many([("u1", "auth", "s1", "anon", DAY)])
    # Another client moves s2: what mine knows of the day's records is out of date.
    for tracker in (theirs, one):
        tracker.track(id="u2", bucket="auth", old_id="s2", old_bucket="anon", date=DAY)
    again = [(id, "anon", None, None, DAY) for id in ("s1", "s2", "s3")]
    for event in again:
        one.track(*event)
    assert round_trips(lambda: mine.track_many(again)) == 2
    assert counts_on(mine) == counts_on(one) == {"anon": 3, "auth": 2, "all": 5}
    # Later batches of the day check every hash: one round trip.
    assert round_trips(lambda: mine.track_many([("s2", "anon", None, None, DAY)])) == 1
    client.close()


@pytest.mark.parametrize("scratch_taken", [False, True])
def test_long_runs_go_into_each_periods_sketch(redis_client, prefix, scratch_taken):
    # 3,000 ids of one day go into the daily, weekly and monthly sketches: through the
    # scratch key, merged into each, or (when that key is someone else's) into each.
    tracker = ActivityTracker(
        periods=["daily", "weekly", "monthly"], client=redis_client, prefix=prefix
    )
    schema, day = KeySchema(prefix), Period("daily", DAY)
    if scratch_taken:
        redis_client.set(schema.batch_scratch(day), "theirs")
    ids = [f"user-{n}" for n in range(3_000)]
    tracker.track_many((id, "web", None, None, DAY) for id in ids)
    redis_client.pfadd(f"{prefix}:expected", *ids)
    expected = redis_client.pfcount(f"{prefix}:expected")
    for kind in ("daily", "weekly", "monthly"):
        sketch = schema.hll(Period.containing(kind, DAY), "b:web")
        assert redis_client.pfcount(sketch) == expected
        # The same registers (and, counted, the same cached count): the same bytes.
        assert redis_client.get(sketch) == redis_client.get(f"{prefix}:expected")
        assert redis_client.ttl(sketch) > 0
    assert redis_client.get(schema.batch_scratch(day)) == (b"theirs" if scratch_taken else None)


@pytest.fixture
def counting_tracker(redis_url, prefix):
    client = redis.Redis.from_url(redis_url, connection_class=CountingConnection)
    periods = ["daily", "weekly", "monthly"]
    tracker = ActivityTracker(periods=periods, client=client, prefix=prefix)
    tracker.track_many([{"id": "warm-up", "date": DAY}])  # loads the script
    yield tracker
    client.close()


def test_a_batch_is_one_round_trip_per_flush_whatever_the_periods(counting_tracker):
    events = [
        {"id": f"u{n % 300}", "bucket": f"b{n % 7}", "date": DAY + datetime.timedelta(n % 3)}
        for n in range(2_000)
    ]
    events += [{"id": "x", "old_id": "u1", "old_bucket": "b1", "date": DAY}]
    assert round_trips(lambda: counting_tracker.track_many(events)) == 1
    with counting_tracker.batch(max_events=500) as batch:
        assert round_trips(lambda: batch.track_many(events)) == 4


def test_a_foreign_key_fails_the_batch_and_nothing_is_written(make_tracker, redis_client, prefix):
    tracker = make_tracker(prefix=prefix, periods=["daily", "monthly"])
    schema = KeySchema(prefix)
    foreign = schema.hll(Period("daily", DAY), encode_bucket("theirs"))
    redis_client.set(foreign, "someone else's value")
    with pytest.raises(WrongKeyTypeError, match="theirs"):
        tracker.track_many([{"id": 1, "bucket": "theirs", "date": DAY}])
    assert redis_client.get(foreign) == b"someone else's value"
    # One script call for all periods (on a cluster, one per period): nothing was written.
    assert redis_client.keys(f"{prefix}:*") == [foreign.encode()]


def test_an_unreachable_redis_fails_the_flush():
    tracker = ActivityTracker(url="redis://127.0.0.1:1/0", socket_timeout=1)
    with pytest.raises(BackendConnectionError):
        tracker.track_many([{"id": 1}])


def test_async_batch_counts_like_track(redis_url, prefix):
    async def scenario():
        async with AsyncActivityTracker(url=redis_url, prefix=prefix) as tracker:
            assert await tracker.track_many(LOGIN_STORY) == len(LOGIN_STORY)
            async with tracker.batch(max_events=2) as batch:
                await batch.track(id="s3", bucket="anon", date=DAY)
                await batch.track_many([{"id": "s4", "bucket": "anon", "date": DAY}])
                assert batch.pending == 0
                await batch.track(id="s5", bucket="anon", date=DAY)
            await tracker.collapse(date=NEXT_DAY)
            return await tracker.lookup_daily(**ONE_DAY)

    assert asyncio.run(scenario()) == [(DAY, {"anon": 4, "auth": 2})]


def test_a_batch_after_redis_closed_the_connection_is_sent_again(redis_url, prefix):
    # A batch goes out on the connections track() keeps between calls: one Redis closed
    # meanwhile costs no batch, sync or asyncio, as for every other call.
    url = f"{redis_url}?client_name={prefix}"
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    tracker = ActivityTracker(url=url, prefix=f"{prefix}:sync")
    tracker.track_many([{"id": "a", "date": DAY}])
    assert close_connections_named(admin, prefix)
    tracker.track_many([{"id": "b", "date": DAY}])

    async def scenario():
        async with AsyncActivityTracker(url=url, prefix=f"{prefix}:async") as async_tracker:
            await async_tracker.track_many([{"id": "a", "date": DAY}])
            assert close_connections_named(admin, prefix)
            await async_tracker.track_many([{"id": "b", "date": DAY}])
            await async_tracker.collapse(date=NEXT_DAY)
            return await async_tracker.lookup_daily(**ONE_DAY)

    assert asyncio.run(scenario()) == [(DAY, {None: 2})]
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(**ONE_DAY) == [(DAY, {None: 2})]
    tracker.close()
    admin.close()


def test_buffered_tracker_sends_every_n_events(make_tracker):
    tracker = make_tracker()
    with BufferedTracker(tracker, max_events=5, interval=60) as buffered:
        for user in USERS[:5]:
            buffered.track(id=user, date=DAY)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and buffered._pending:
            time.sleep(0.01)
        assert not buffered._pending
        buffered.track(id=USERS[5], date=DAY)
        assert buffered.flush(timeout=10)
        assert counts_on(tracker)[None] == 6
        buffered.track_many([(USERS[6], None, None, None, DAY)])
    assert counts_on(tracker)[None] == 7  # closing sent the last one
    with pytest.raises(RuntimeError, match="closed"):
        buffered.track(id=1)


def test_buffered_tracker_sends_every_interval(make_tracker):
    tracker = make_tracker()
    buffered = BufferedTracker(tracker, max_events=1000, interval=0.05)
    try:
        buffered.track(id="a", date=DAY)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (buffered._pending or buffered._sending):
            time.sleep(0.01)
        assert counts_on(tracker)[None] == 1
    finally:
        buffered.close()


def test_buffered_tracker_from_many_threads_counts_every_user(make_tracker):
    tracker = make_tracker()
    buffered = BufferedTracker(tracker, max_events=7, interval=0.01)

    def work(offset):
        for n in range(300):
            buffered.track(id=USERS[(n + offset) % len(USERS)], bucket="anon", date=DAY)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    buffered.close()
    assert buffered.lost == 0
    assert counts_on(tracker)["anon"] == len(USERS)


def test_buffered_tracker_logs_a_failed_send_and_raises_it_on_the_next_call(caplog):
    tracker = ActivityTracker(url="redis://127.0.0.1:1/0", socket_timeout=1)
    buffered = BufferedTracker(tracker, max_events=2, interval=60)
    with caplog.at_level(logging.ERROR, logger="activity_tracker"):
        buffered.track(id=1)
        buffered.track(id=2)
        with pytest.raises(BackendConnectionError):
            buffered.flush(timeout=30)
    assert "sending 2 buffered events failed" in caplog.text
    assert buffered.lost == 2
    buffered.track(id=3)  # the error was raised once; the buffer goes on
    with pytest.raises(BackendConnectionError):
        buffered.close()
    assert buffered.lost == 3


def test_buffered_tracker_checks_arguments_in_the_callers_thread(make_tracker):
    with BufferedTracker(make_tracker()) as buffered:
        with pytest.raises(TypeError, match="bucket"):
            buffered.track(id=1, bucket=2)
        with pytest.raises(ValueError, match="interval"):
            BufferedTracker(buffered.tracker, interval=0)


@pytest.mark.redis_only  # a forked child of the memory backend has a copy of its own
def test_buffered_tracker_survives_fork(make_tracker):
    tracker = make_tracker()
    buffered = BufferedTracker(tracker, max_events=100, interval=60)
    buffered.track(id="parent", date=DAY)  # still pending when the process forks
    pid = os.fork()
    if pid == 0:  # the child: its buffer starts empty, with a thread of its own
        code = 1
        try:
            buffered.track(id="child", date=DAY)
            code = 0 if len(buffered._pending) == 1 else 2
            code = code or (0 if buffered.flush(timeout=10) else 3)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    buffered.close()
    assert counts_on(tracker)[None] == 2


def test_keys_of_someone_else_are_never_overwritten_by_track_or_batches(
    make_tracker, redis_client, prefix
):
    tracker = make_tracker(prefix=prefix, periods=["daily", "weekly"])
    schema, day = KeySchema(prefix), Period("daily", DAY)
    # A bucket tracked before: track.lua trusts its registered HLL without probing it, so
    # an HLL overwritten since is refused by Redis's PFADD, and left as it is.
    tracker.track(id=1, bucket="mine", date=DAY)
    mine = schema.hll(day, encode_bucket("mine"))
    redis_client.set(mine, "overwritten")
    for call in (
        lambda: tracker.track(id=2, bucket="mine", date=DAY),
        lambda: tracker.track_many([(str(n), "mine", None, None, DAY) for n in range(3)]),
    ):
        with pytest.raises(WrongKeyTypeError):
            call()
        assert redis_client.get(mine) == b"overwritten"
    # Someone else's list where a batch would write its change records: nothing written.
    redis_client.delete(mine)
    changes = schema.chg(day)
    redis_client.rpush(changes, "x")
    with pytest.raises(WrongKeyTypeError, match="chg"):
        tracker.track_many([{"id": 3, "old_id": 1, "old_bucket": "mine", "date": DAY}])
    assert redis_client.lrange(changes, 0, -1) == [b"x"]
    # One script call for all periods: the weekly one was not written either.
    assert redis_client.exists(schema.chg(Period.containing("weekly", DAY))) == 0


@pytest.mark.parametrize(("changes", "batch"), [(3, 60), (60, 3)])
def test_a_batch_finds_the_records_of_ids_moved_before_it(make_tracker, changes, batch):
    # With fewer ids with records than ids to check, track_many.lua reads the day's records
    # at once; with more, only the shards of the ids it checks: both must see every record.
    one, many = make_tracker(), make_tracker()
    for tracker in (one, many):
        for n in range(changes):
            tracker.track(id=f"s{n}", bucket="anon", date=DAY)
            tracker.track(id=f"u{n}", bucket="auth", old_id=f"s{n}", old_bucket="anon", date=DAY)
    events = [(f"s{n}", "anon", None, None, DAY) for n in range(0, changes, 2)]
    events += [(f"new{n}", "anon", None, None, DAY) for n in range(batch)]
    for event in events:
        one.track(*event)
    many.track_many(events)
    assert counts_on(many) == counts_on(one)
    assert counts_on(many)["anon"] == len(range(0, changes, 2)) + batch
