"""The store thread: every session's database steps on one thread, many jobs per COMMIT.

A session hands a job (a request handler, an upload's install, a 1104) to `StoreThread.run`
and awaits it. The thread takes every job waiting when it wakes (a batch), runs them one
after another with their commits deferred (`Store.deferring`: each step is written in its
savepoint and memory updated), then commits once (one fsync for the batch). What had to
wait for the commit (`Store.after_commit`: a small file's writes, the renames and their
folder fsyncs) runs in the pool: the work of different clients at once, so that their
fsyncs overlap, that of one client (its key) in the order of the jobs, also across batches.
The thread waits for that work up to `AFTER_COMMIT_WAIT`, then hands every result ready back
to the event loop in one call; work still running then reports its own jobs when done, so a
slow file-system call delays its own session, not the next batches. Clean-up that nobody
waits for (removing an expired version's file, which can take a fifth of a second per GiB:
`Store.after_reply`) goes to the pool after the report. So no response leaves before the
commit holding its step (spec 9.2 rules 3 and 4), a failed COMMIT fails every job of the
batch, and a batch costs one thread wake-up and, usually, one loop wake-up instead of a pool
hand-off, a lock convoy and a commit per step; while the thread waits, the next jobs gather
into a larger batch (small sessions at 100 clients: 34-37 jobs per COMMIT, against 21-23
when it did not wait). The row updates of one file happen in the order the jobs ran, and
its renames in the same order (spec 9.2 rule 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future, wait
from typing import Final, TypeVar

from .errors import StorageError
from .store import Deferred, Store

AFTER_COMMIT_WAIT: Final = 0.05
"""Seconds the store thread waits for a batch's after-commit work (renames, fsyncs) before it goes
on: work done by then is reported with the batch (one wake-up of the loop; meanwhile the next
jobs gather into a larger batch), later work reports itself, so a slow file system call delays
its own session only."""
MAX_BATCH: Final = 256
"""Jobs run before one COMMIT at most (bounds the latency a batch adds to its first job)."""

log = logging.getLogger(__name__)

Result = TypeVar("Result")
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[object]", Callable[..., object], tuple[object, ...]]
_Outcome = tuple["asyncio.Future[object]", object, BaseException | None]
_Ran = tuple[_Job, object, BaseException | None, Deferred]
"""A job run: its result, its error (None: it succeeded), what it deferred."""


class StoreThread:
    """`await run(function, *args)`: `function(*args)` on the store thread, reported once its steps
    are durable and its after-commit actions done."""

    def __init__(self, store: Store, pool: Executor | None = None) -> None:
        """`pool`: where the after-commit actions of different keys run at once (None: in turn here)."""
        self.store = store
        self._pool = pool
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._chain_lock = threading.Lock()
        self._tails: dict[Hashable, Future[None]] = {}
        """Per key, the last after-commit work queued (until it is done)."""
        self._barrier: Future[None] | None = None
        """The last keyless after-commit work queued (until it is done)."""
        self._thread = threading.Thread(target=self._serve, name="store", daemon=True)
        self._thread.start()

    async def run(self, function: Callable[..., Result], *args: object) -> Result:
        """Run `function(*args)` in the next batch; its result (or exception) once its steps are committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self._jobs.put((loop, future, function, args))
        return await future  # type: ignore[return-value]

    def stop(self) -> None:
        """Finish the jobs queued so far (and what follows their commits), then end the thread."""
        self._jobs.put(None)
        self._thread.join()
        with self._chain_lock:
            pending = [*self._tails.values(), *([self._barrier] if self._barrier else [])]
        wait(pending)

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
        ran: list[_Ran] = []
        for job in batch:
            _, _, function, args = job
            with store.deferring() as deferred:
                try:
                    ran.append((job, function(*args), None, deferred))
                except Exception as raised:  # reported to the job's session
                    ran.append((job, None, raised, deferred))
        done: list[_Ran] = []
        steps: list[tuple[Hashable, list[_Ran]]] = []
        segment: dict[Hashable, list[_Ran]] = {}
        for job, result, failed, deferred in ran:
            error = failed
            try:
                store.commit_deferred(deferred)  # what a failed job wrote stands, as without deferring
            except StorageError as failure:
                error = error or failure
            if error is not None or not deferred.after:
                done.append((job, result, error, deferred))
            elif deferred.key is not None:
                segment.setdefault(deferred.key, []).append((job, result, None, deferred))
            else:  # touches anything: after the keyed actions before it, before those after it
                steps.extend(segment.items())
                segment = {}
                steps.append((None, [(job, result, None, deferred)]))
        steps.extend(segment.items())
        if steps:
            gathering = _Gathering()
            running = [
                self._chain(key, functools.partial(self._finish, jobs, gathering)) for key, jobs in steps
            ]
            wait(running, timeout=AFTER_COMMIT_WAIT)
            done += gathering.close()
        self._report(done)

    def _chain(self, key: Hashable, work: Callable[[], None]) -> Future[None]:
        """Run `work` (after-commit actions of `key`) once the work queued before for that key, and
        any keyless work, is done; keyless work (`key` None) once all work queued before it is
        done. In the pool, so that the store thread goes on with the next batch; without a pool,
        here and now (everything before it is done by then)."""
        finished: Future[None] = Future()
        if self._pool is None:
            work()
            finished.set_result(None)
            return finished
        with self._chain_lock:
            if key is None:
                before = [*self._tails.values(), *([self._barrier] if self._barrier else [])]
                self._tails.clear()
                self._barrier = finished
            else:
                before = [tail for tail in (self._tails.get(key), self._barrier) if tail is not None]
                self._tails[key] = finished

        def run() -> None:
            try:
                work()
            finally:
                with self._chain_lock:
                    if self._tails.get(key) is finished:
                        del self._tails[key]
                    if self._barrier is finished:
                        self._barrier = None
                finished.set_result(None)

        waiting = [len(before)]

        def start(_: object = None) -> None:
            with self._chain_lock:
                waiting[0] -= 1
                if waiting[0] > 0:
                    return
            self._submit(run)

        if not before:
            self._submit(run)
        for tail in before:
            tail.add_done_callback(start)
        return finished

    def _submit(self, work: Callable[[], None]) -> None:
        """`work` in the pool; here without a pool, or once it has shut down."""
        if self._pool is not None:
            with contextlib.suppress(RuntimeError):  # shut down: here, then
                self._pool.submit(work)
                return
        work()

    def _finish(self, jobs: list[_Ran], gathering: _Gathering) -> None:
        """The after-commit actions of `jobs` (renames, fsyncs), one job after another; a failed
        action fails its job (2107). Reported with their batch if the store thread still waits
        for it, else here."""
        done: list[_Ran] = []
        for job, result, _, deferred in jobs:
            try:
                for action in deferred.after:
                    action()
            except Exception as failure:  # the job fails with it
                done.append((job, None, failure, deferred))
            else:
                done.append((job, result, None, deferred))
        if not gathering.add(done):
            self._report(done)

    def _report(self, jobs: list[_Ran]) -> None:
        """Wake the jobs' sessions (one call per event loop); then their clean-up (`Store.after_reply`)
        of the successful ones, in the pool beside the next batches (here without a pool)."""
        outcomes: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        later: list[Callable[[], None]] = []
        for (loop, future, _, _), result, error, deferred in jobs:
            outcomes.setdefault(loop, []).append((future, None if error else result, error))
            if error is None:
                later.extend(deferred.later)
        for loop, results in outcomes.items():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_deliver, results)
        if later:
            self._submit(functools.partial(_run_all, later))


class _Gathering:
    """The outcomes of one batch's after-commit work, while the store thread waits for them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: list[_Ran] | None = []

    def add(self, outcomes: list[_Ran]) -> bool:
        """Hand outcomes to the waiting store thread; False if it has stopped waiting."""
        with self._lock:
            if self._outcomes is None:
                return False
            self._outcomes += outcomes
            return True

    def close(self) -> list[_Ran]:
        """Stop waiting: the outcomes gathered so far (later ones report themselves)."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes or [], None
            return outcomes


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
