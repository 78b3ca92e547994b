"""The store thread: every session's database steps on one thread, many jobs per COMMIT.

A session hands a job (a request handler, an upload's install, a 1104) to `StoreThread.run`
and awaits it. The thread takes every job waiting when it wakes (a batch), runs them one
after another with their commits deferred (`Store.deferring`: each step is written in its
savepoint and memory updated), then commits once (one fsync for the batch), then runs what
had to wait for the commit (renames and their folder fsyncs: `Store.after_commit`; those of
different clients at once in the pool, so that their fsyncs overlap, those of one client in
order), and only then hands all results back to the event loop in one call; clean-up that
nobody waits for (removing an expired version's file, which can take a fifth of a second per
GiB: `Store.after_reply`) goes to the pool after that. So no response leaves before
the commit holding its step (spec 9.2 rules 3 and 4), a failed COMMIT fails every job of the
batch, and a batch costs one thread wake-up and one loop wake-up instead of a pool hand-off,
a lock convoy and a commit per step. One thread also orders the steps of one file: its row
updates and renames happen in the order the jobs ran (spec 9.2 rule 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Final, TypeVar

from .errors import StorageError
from .store import Deferred, Store

MAX_BATCH: Final = 256
"""Jobs run before one COMMIT at most (bounds the latency a batch adds to its first job)."""

log = logging.getLogger(__name__)

Result = TypeVar("Result")
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[object]", Callable[..., object], tuple[object, ...]]
_Outcome = tuple["asyncio.Future[object]", object, BaseException | None]


class StoreThread:
    """`await run(function, *args)`: `function(*args)` on the store thread, reported once durable."""

    def __init__(self, store: Store, pool: Executor | None = None) -> None:
        """`pool`: where the after-commit actions of different keys run at once (None: in turn here)."""
        self.store = store
        self._pool = pool
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="store", daemon=True)
        self._thread.start()

    async def run(self, function: Callable[..., Result], *args: object) -> Result:
        """Run `function(*args)` in the next batch; its result (or exception) once its steps are committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self._jobs.put((loop, future, function, args))
        return await future  # type: ignore[return-value]

    def stop(self) -> None:
        """Finish the jobs queued so far, then end the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        store = self.store
        ran: list[tuple[_Job, object, BaseException | None, Deferred]] = []
        for job in batch:
            _, _, function, args = job
            with store.deferring() as deferred:
                try:
                    ran.append((job, function(*args), None, deferred))
                except Exception as raised:  # reported to the job's session
                    ran.append((job, None, raised, deferred))
        committed: list[Deferred] = []
        errors: list[BaseException | None] = []
        for _, _, failed, deferred in ran:
            error = failed
            try:
                store.commit_deferred(deferred)  # what a failed job wrote stands, as without deferring
            except StorageError as failure:
                error = error or failure
            errors.append(error)
            if error is None and deferred.after:
                committed.append(deferred)
        failures = self._run_after_commit(committed)
        outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        later: list[Callable[[], None]] = []
        for ((loop, future, _, _), result, _, deferred), error in zip(ran, errors, strict=True):
            error = error or failures.get(id(deferred))
            outcomes.setdefault(loop, []).append((future, None if error else result, error))
            if error is None:
                later.extend(deferred.later)
        for loop, results in outcomes.items():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_deliver, results)
        if later:
            self._run_later(later)

    def _run_later(self, actions: list[Callable[[], None]]) -> None:
        """The clean-up of reported jobs (`Store.after_reply`): in the pool beside the next batches
        (here when there is none, or it has shut down)."""
        if self._pool is not None:
            with contextlib.suppress(RuntimeError):  # shut down: run them here
                self._pool.submit(_run_all, actions)
                return
        _run_all(actions)

    def _run_after_commit(self, jobs: list[Deferred]) -> dict[int, Exception]:
        """Run the jobs' after-commit actions (renames, fsyncs): the jobs of one key in order, other
        keys at once in the pool (their fsyncs overlap), a job without a key alone; returns the
        failures by id of the job's Deferred."""
        failures: dict[int, Exception] = {}
        segment: dict[Hashable, list[Deferred]] = {}
        for deferred in [*jobs, None]:
            if deferred is not None and deferred.key is not None:
                segment.setdefault(deferred.key, []).append(deferred)
                continue
            groups = list(segment.values())
            if self._pool is None or len(groups) < 2:
                for group in groups:
                    failures.update(_run_in_order(group))
            else:  # the first group here, the others in the pool meanwhile
                running = [self._pool.submit(_run_in_order, group) for group in groups[1:]]
                failures.update(_run_in_order(groups[0]))
                for done in running:
                    failures.update(done.result())
            segment = {}
            if deferred is not None:  # no key: after the jobs before it, before those after it
                failures.update(_run_in_order([deferred]))
        return failures


def _run_in_order(jobs: list[Deferred]) -> dict[int, Exception]:
    """The after-commit actions of `jobs`, one job after another; the failed jobs."""
    failures: dict[int, Exception] = {}
    for deferred in jobs:
        try:
            for action in deferred.after:
                action()
        except Exception as failure:  # the job fails with it (2107)
            failures[id(deferred)] = failure
    return failures


def _run_all(actions: list[Callable[[], None]]) -> None:
    """Clean-up actions one after another; one that fails (they report their own failures) stops no other."""
    for action in actions:
        try:
            action()
        except Exception:
            log.exception("clean-up after a reply failed")


def _deliver(results: list[_Outcome]) -> None:
    """On the event loop: wake every session of the batch."""
    for future, result, error in results:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
