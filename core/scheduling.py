"""Run dask tasks with progress and cancel, on local threads or a dask.distributed cluster.

Cancel is checked a few times a second, and before each task starts. A cancelled or failed
run returns at once, even while tasks are blocked in I/O (a server that stopped answering):
they are abandoned, end when their request's deadline passes (core.retry) and start no other
task. On a cluster, cancelled futures report cancelled at once while a worker may still be
finishing a task. Either way output.write_tile refuses such a late tile once the run's store
is discarded, so it cannot bring the discarded folder back.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import dask
from dask.callbacks import Callback

from .errors import CancelledError, ParameterError
from .retry import retry_count

POLL_SECONDS = 0.2
GRACE_SECONDS = 2.0  # how long a cancelled or failed run waits for its running tasks
THREADS = ("threads", "threading")
SINGLE_THREAD = ("sync", "synchronous", "single-threaded")


def run_tasks(
    tasks: list,
    *,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    scheduler=None,
    on_done: Callable[[object], None] | None = None,
    first: Callable[[object], float] | None = None,
) -> list:
    """Compute the delayed `tasks`; progress(fraction of tasks done); cancel() -> CancelledError.

    on_done(key) is called as each of `tasks` finishes (on a worker thread). first(key) ranks
    the tasks that can start at once (lower first; local threads only): e.g. blocks nearest the
    view's centre first, so its tiles are written first.
    """
    progress = progress or (lambda fraction: None)
    cancel = cancel or (lambda: False)
    on_done = on_done or (lambda key: None)
    if cancel():
        raise CancelledError("Cancelled before the run started.")
    if scheduler in SINGLE_THREAD:
        return _run_on_threads(tasks, progress, cancel, on_done, first, workers=1)
    if runs_locally(scheduler):
        return _run_on_threads(tasks, progress, cancel, on_done, first)
    return _run_on_cluster(tasks, progress, cancel, scheduler, on_done)


def run_cancellable(work: Callable, cancel: Callable[[], bool] | None = None):
    """work() on a helper thread, returning its result, or CancelledError within a poll of
    cancel() turning True (the work is abandoned: e.g. an open waiting on a hung server)."""
    if cancel is None:
        return work()
    if cancel():
        raise CancelledError("Cancelled before the run started.")
    outcome = {}
    finished = threading.Event()

    def run():
        try:
            outcome["result"] = work()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=run, name="embedding-change-open", daemon=True).start()
    while not finished.wait(POLL_SECONDS):
        if cancel():
            raise CancelledError("Cancelled while opening the store; nothing was written.")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def retries_so_far(scheduler, urls) -> int:
    """Retries made so far for requests to `urls`: by this process and, on a dask.distributed
    cluster, by its workers' processes (each process counts its own, core.retry), so a run's
    log can say how many retries it took wherever its tasks ran."""
    urls = sorted(set(urls))
    total = sum(retry_count(url) for url in urls)
    if runs_locally(scheduler):
        return total
    with _cluster_client(scheduler) as client:
        counts = client.run(_retries_of_process, urls)
    here = os.getpid()  # workers in this process (processes=False) count in `total` already
    return total + sum(count for pid, count in counts.values() if pid != here)


def _retries_of_process(urls) -> tuple[int, int]:
    return os.getpid(), sum(retry_count(url) for url in urls)


def run_order(tasks: list, prefix: str) -> list:
    """The keys of the tasks' graph that start with `prefix`, in the order dask's local
    scheduler runs them (its priorities): the read-ahead fetches blocks in that order."""
    from dask.order import order

    graph = dict(tasks[0].dask) if tasks else {}
    priorities = order(graph)
    keys = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith(prefix)]
    return sorted(keys, key=priorities.__getitem__)


def runs_locally(scheduler) -> bool:
    """Whether run_tasks runs on this process's threads (else on a dask.distributed cluster)."""
    return scheduler is None or scheduler in THREADS or scheduler in SINGLE_THREAD


def _run_on_threads(tasks, progress, cancel, on_done, first, workers: int | None = None) -> list:
    watched = {task.key for task in tasks}
    done = 0
    stopped = threading.Event()

    def before_task(key, dsk, state):
        if stopped.is_set() or cancel():
            stopped.set()
            raise CancelledError("Cancelled: the output was removed.")

    def after_task(key, result, dsk, state, worker_id):
        nonlocal done
        if key in watched:
            done += 1
            on_done(key)
            progress(done / len(watched))

    def start_state(dsk, state):
        if first is not None:  # dask starts the ready task at the end of the list first
            state["ready"].sort(key=first, reverse=True)

    pool = ThreadPoolExecutor(workers or os.cpu_count() or 2)
    # This run's own callbacks, not dask's global ones: a run abandoned on cancel may still be
    # winding down while another starts.
    callbacks = [
        Callback(start_state=start_state, pretask=before_task, posttask=after_task)._callback
    ]
    outcome = {}
    finished = threading.Event()

    def compute():
        try:
            outcome["result"] = list(
                dask.compute(*tasks, scheduler="threads", pool=pool, callbacks=callbacks)
            )
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=compute, name="embedding-change-run", daemon=True).start()
    try:
        while not finished.wait(POLL_SECONDS):
            if cancel():
                raise CancelledError("Cancelled: the output was removed.")
    finally:
        stopped.set()
        # Tasks still running get a moment to end, so that a process exiting right after the
        # error (qgis_process) does not cut a task off half-way through creating files; tasks
        # blocked in I/O are left behind (core.output refuses their writes).
        closing = threading.Thread(
            target=pool.shutdown, kwargs={"wait": True, "cancel_futures": True}, daemon=True
        )
        closing.start()
        closing.join(GRACE_SECONDS)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@contextlib.contextmanager
def _cluster_client(scheduler):
    """The dask.distributed Client for `scheduler` (a Client, or an address it connects to)."""
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - distributed is pinned in the lock
        raise ParameterError("A dask scheduler address needs the distributed package.") from exc
    if isinstance(scheduler, Client):
        yield scheduler
        return
    try:
        client = Client(scheduler, set_as_default=False)
    except OSError as exc:
        raise ParameterError(
            f"Cannot reach the dask scheduler at {scheduler!r}: {exc}. Check the address "
            "(tcp://host:8786) or leave it empty to run on this machine."
        ) from exc
    try:
        yield client
    finally:
        client.close()


def _run_on_cluster(tasks, progress, cancel, scheduler, on_done) -> list:
    with _cluster_client(scheduler) as client:
        futures = client.compute(tasks)
        reported = set()
        while True:
            for future in futures:
                if future.key not in reported and future.status == "finished":
                    reported.add(future.key)
                    on_done(future.key)
            finished = sum(f.done() for f in futures)
            progress(finished / len(futures))
            if finished == len(futures):
                return client.gather(futures)  # raises the first task error
            if cancel():
                client.cancel(futures)
                raise CancelledError("Cancelled: the output was removed.")
            if any(f.status == "error" for f in futures):
                client.cancel(futures)
                return client.gather(futures)
            time.sleep(POLL_SECONDS)
