"""The store thread: many sessions' steps per COMMIT, nothing reported before it is durable (spec 9.2)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from reference_server.errors import StorageError
from reference_server.store import Store
from reference_server.store_thread import StoreThread

BOUND = 10.0
"""Seconds a test waits at most for an event (a bound, never a timing assert)."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "server.db")
    yield opened
    opened.close()


def committed_names(path: Path) -> set[str]:
    """Client names as another connection sees them: only what is committed."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {row[0] for row in db.execute("SELECT Name FROM clients")}


def trace_commits(store: Store, log: list[str]) -> None:
    store._db.set_trace_callback(lambda sql: log.append(sql) if sql == "COMMIT" else None)


def test_queued_jobs_share_one_commit_and_are_reported_only_once_committed(store: Store) -> None:
    log: list[str] = []
    trace_commits(store, log)
    started, release = threading.Event(), threading.Event()
    seen_when_reported: dict[str, bool] = {}

    def blocking_register(name: str) -> None:
        started.set()
        assert release.wait(BOUND)
        store.register(name)

    async def register(thread: StoreThread, name: str, blocking: bool = False) -> None:
        if blocking:
            await thread.run(blocking_register, name)
        else:
            await thread.run(store.register, name)
        seen_when_reported[name] = name in committed_names(store.path)

    async def scenario() -> None:
        thread = StoreThread(store)
        try:
            first = asyncio.create_task(register(thread, "first", blocking=True))
            assert await asyncio.to_thread(started.wait, BOUND)  # its batch runs: the rest queue behind
            rest = [asyncio.create_task(register(thread, f"c{n}")) for n in range(10)]
            await asyncio.sleep(0)  # all ten queued behind the blocked job
            release.set()
            await asyncio.wait_for(asyncio.gather(first, *rest), BOUND)
        finally:
            thread.stop()

    asyncio.run(scenario())
    assert seen_when_reported == {name: True for name in ["first", *(f"c{n}" for n in range(10))]}
    assert log == ["COMMIT", "COMMIT"]  # the blocked job's batch, then one for the ten


def test_after_commit_actions_run_after_the_commit_in_order(store: Store) -> None:
    log: list[str] = []
    trace_commits(store, log)

    def job(name: str) -> None:
        record = store.register(name)
        assert record is not None
        store.after_commit(lambda: log.append(f"after {name}: {name in committed_names(store.path)}"))

    async def scenario() -> None:
        thread = StoreThread(store)
        try:
            await asyncio.wait_for(asyncio.gather(thread.run(job, "a"), thread.run(job, "b")), BOUND)
        finally:
            thread.stop()

    asyncio.run(scenario())
    assert log == ["COMMIT", "after a: True", "after b: True"]
    job("c")  # outside the store thread: the step commits at once, the action follows
    assert log[-2:] == ["COMMIT", "after c: True"]


def test_a_failing_job_fails_alone(store: Store) -> None:
    def refuse(name: str) -> None:
        raise StorageError(f"refused {name}")

    async def scenario() -> list[Any]:
        thread = StoreThread(store)
        try:
            return await asyncio.wait_for(
                asyncio.gather(
                    thread.run(store.register, "kept"), thread.run(refuse, "x"), return_exceptions=True
                ),
                BOUND,
            )
        finally:
            thread.stop()

    kept, refused = asyncio.run(scenario())
    assert kept is not None and kept.name == "kept"
    assert isinstance(refused, StorageError) and "refused x" in str(refused)
    assert committed_names(store.path) == {"kept"}


class _FailingCommits:
    """The store's connection, but COMMIT fails (as on an I/O error); everything else passes through."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_failed_commit_fails_every_job_of_its_batch_and_memory_forgets_them(store: Store) -> None:
    real = store._db
    store._db = _FailingCommits(real)  # type: ignore[assignment]
    actions: list[str] = []

    def job(name: str) -> None:
        store.register(name)
        store.after_commit(lambda: actions.append(name))

    async def scenario() -> list[Any]:
        thread = StoreThread(store)
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(thread.run(job, f"c{n}") for n in range(3)), return_exceptions=True), BOUND
            )
        finally:
            thread.stop()

    try:
        results = asyncio.run(scenario())
    finally:
        store._db = real
    assert all(isinstance(result, StorageError) for result in results), results
    assert actions == []  # no rename runs for a step that is not durable
    assert [client.name for client in store.clients()] == []
    assert committed_names(store.path) == set()


def test_after_commit_actions_of_other_keys_overlap_and_of_one_key_keep_their_order(store: Store) -> None:
    """With a pool, client A's rename may wait for client B's (it would wait out the bound if the
    two ran one after the other); A's two actions still run in the order of their jobs."""
    other_ran, started, release = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def hold() -> None:
        started.set()
        assert release.wait(BOUND)

    def first_of_a() -> None:
        order.append(f"a1 saw b: {other_ran.wait(BOUND)}")

    def job(name: str, key: str, action: Any) -> None:
        store.register(name)
        store.after_commit(action, key=key)

    async def scenario() -> None:
        with ThreadPoolExecutor(max_workers=2) as pool:
            thread = StoreThread(store, pool)
            try:
                held = asyncio.create_task(thread.run(hold))
                assert await asyncio.to_thread(started.wait, BOUND)  # the three below form one batch
                jobs = [
                    asyncio.create_task(thread.run(job, "a1", "A", first_of_a)),
                    asyncio.create_task(thread.run(job, "a2", "A", lambda: order.append("a2"))),
                    asyncio.create_task(thread.run(job, "b", "B", other_ran.set)),
                ]
                await asyncio.sleep(0)  # all three queued
                release.set()
                await asyncio.wait_for(asyncio.gather(held, *jobs), 2 * BOUND)
            finally:
                thread.stop()

    asyncio.run(scenario())
    assert order == ["a1 saw b: True", "a2"]


def test_clean_up_runs_after_the_job_is_reported_and_never_for_a_failed_one(store: Store) -> None:
    reported = threading.Event()
    cleaned: list[tuple[str, bool]] = []
    done = threading.Event()

    def job(name: str, fail: bool) -> None:
        store.register(name)
        store.after_reply(lambda: cleaned.append((name, reported.wait(BOUND))))
        store.after_reply(done.set)
        if fail:
            raise StorageError(f"refused {name}")

    async def scenario() -> list[Any]:
        with ThreadPoolExecutor(max_workers=2) as pool:
            thread = StoreThread(store, pool)
            try:
                results = await asyncio.wait_for(
                    asyncio.gather(
                        thread.run(job, "ok", False), thread.run(job, "bad", True), return_exceptions=True
                    ),
                    BOUND,
                )
                reported.set()  # the clean-up of "ok" waits for this: the results came first
                assert await asyncio.to_thread(done.wait, BOUND)
                return results
            finally:
                thread.stop()

    ok, bad = asyncio.run(scenario())
    assert ok is None and isinstance(bad, StorageError)
    assert cleaned == [("ok", True)]
    store.after_reply(lambda: cleaned.append(("outside", True)))  # not deferred: at once
    assert cleaned[-1] == ("outside", True)


def test_a_slow_after_commit_action_delays_only_its_own_job(store: Store) -> None:
    """A rename or folder fsync can wait for a slow file system. The store thread waits for a
    batch's after-commit work only AFTER_COMMIT_WAIT, then goes on: a job queued later is
    reported while the slow one still waits (were the thread stuck, it would wait out the
    bound), and a later action of the same key still runs after the slow one."""
    release = threading.Event()
    order: list[str] = []

    def slow(name: str) -> None:
        store.register(name)
        store.after_commit(lambda: order.append(f"slow, released: {release.wait(BOUND)}"), key="A")

    def same_key(name: str) -> None:
        store.register(name)
        store.after_commit(lambda: order.append("same key"), key="A")

    async def scenario() -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            thread = StoreThread(store, pool)
            try:
                held = asyncio.create_task(thread.run(slow, "slow"))
                await asyncio.wait_for(thread.run(store.register, "other"), BOUND / 2)
                assert not held.done()
                after = asyncio.create_task(thread.run(same_key, "same"))
                other_key = await asyncio.wait_for(thread.run(store.register, "third"), BOUND / 2)
                assert other_key is not None and not after.done()
                release.set()
                await asyncio.wait_for(asyncio.gather(held, after), BOUND)
            finally:
                release.set()
                thread.stop()

    asyncio.run(scenario())
    assert order == ["slow, released: True", "same key"]
