"""A joblib backend whose calls run in a transient unit: ``parallel_config(backend="concurrentd")``.

    import concurrentd.joblib   # registers the backend "concurrentd"
    with parallel_config(backend="concurrentd", n_jobs=2, properties={"User": "nobody"}):
        results = Parallel()(delayed(parse)(blob) for blob in untrusted)

joblib has no executor hook: a backend is a ParallelBackendBase, and this one hands joblib's
batches to a TransientUnitPoolExecutor, started when a Parallel call begins (once for a
``with Parallel(...) as parallel:`` block) and shut down when it ends. parallel_config's extra
keywords are the pool's: ``properties=`` and any TransientUnitPoolExecutor option
(``result_types=``, ``mp_context=``, ``on_worker_death=``…). A batch's results come back as data,
as any pool's do (SECURITY.md).
"""

from __future__ import annotations

import inspect
from concurrent.futures import Future
from typing import Any, Callable, Mapping

from joblib import register_parallel_backend
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase
from joblib.parallel import cpu_count

from .executor import TransientUnitPoolExecutor

__all__ = ["ConcurrentdBackend", "NAME"]

#: the backend's name in parallel_config(backend=...) and Parallel(backend=...)
NAME = "concurrentd"


# (joblib ships no types: its classes are Any, which --strict refuses as a base class)
class ConcurrentdBackend(AutoBatchingMixin, ParallelBackendBase):   # type: ignore[misc]
    """joblib's calls, batched as joblib batches them, in a TransientUnitPoolExecutor.

    Args:
        properties: the unit's settings, as for TransientUnitPoolExecutor.
        **pool_options: any other TransientUnitPoolExecutor keyword (result_types=,
            mp_context=, on_worker_death=, preload=, initializer=…); max_workers comes from
            n_jobs.

    n_jobs=1 runs one worker, in the unit: joblib runs a backend that reports a single job
    in its own process, outside any sandbox, so this backend never reports fewer than 2.
    """

    supports_retrieve_callback = True   # results through retrieve_result_callback; timeouts
    supports_sharedmem = False
    uses_threads = False

    def __init__(self, properties: Mapping[str, Any] | None = None, *,
                 nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 **pool_options: Any):
        _check_options(pool_options)
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        self.properties = dict(properties or {})
        self.pool_options = pool_options
        self.pool: TransientUnitPoolExecutor | None = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        return max(2, self._workers(n_jobs))

    def _workers(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            cpus: int = cpu_count()
            return max(cpus + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **joblib_options: Any) -> int:
        """Starts the pool (its unit) for a Parallel call; returns the jobs joblib may run.

        ``joblib_options`` are what joblib gives every backend (max_nbytes, temp_folder,
        mmap_mode: memory-mapping of large arrays; context: its own backends' multiprocessing
        context): a pool has no use for them (its start is ``mp_context=``)."""
        self.parallel = parallel
        workers = self._workers(n_jobs)
        if self.pool is None:
            self.pool = TransientUnitPoolExecutor(workers, self.properties, **self.pool_options)
        return max(2, workers)

    def submit(self, func: Callable[[], Any],
               callback: Callable[[Future[Any]], object] | None = None) -> Future[Any]:
        """Runs one of joblib's batches in the pool; ``callback`` is joblib's, on completion."""
        assert self.pool is not None   # joblib submits between configure() and terminate()
        future = self.pool.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Future[Any]) -> Any:
        return future.result()

    def terminate(self) -> None:
        """Shuts the pool down: its unit is stopped."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed: the queued ones are cancelled and the running ones killed (their
        results are not wanted), then the unit stops; ``ensure_ready``: a new pool for what
        comes next."""
        pool, self.pool = self.pool, None
        if pool is not None:
            processes = pool._processes
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes.values():
                process.kill()
            # (a shutdown(wait=True) after shutdown(wait=False) returns at once, as
            # ProcessPoolExecutor's): the unit is stopped when the pool's thread ends
            pool._executor_manager_thread.join()
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)


def _check_options(options: Mapping[str, Any]) -> None:
    accepted = inspect.signature(TransientUnitPoolExecutor).parameters
    refused = ("max_workers", "properties")
    for option in options:
        if option not in accepted or option in refused:
            known = sorted(k for k in accepted if k not in refused)
            raise TypeError(f"the concurrentd backend got an unexpected option {option!r}: "
                            f"n_jobs sets the workers, properties= the unit; the other options "
                            f"are TransientUnitPoolExecutor's: {', '.join(known)}")


register_parallel_backend(NAME, ConcurrentdBackend)
