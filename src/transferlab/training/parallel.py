"""Fine-tuning cells side by side: ``trainer.cell_processes`` processes on one CPU machine.

Two cores run one cell of the small default model at batch 64 only 1.45x faster than one core
does (torch's intra-op threads on small tensors), so cells trained side by side, one core's
share of threads each, finish sooner: the default stage's 12 cells of finetune_all took 117.4 s
with ``cell_processes: 2`` against 137.7 s with 1 (1.17x, 2-core CPU, BENCHMARKS.md). The
stage's own process trains cells too; each extra worker first spends ~8 s on its imports.

Each worker trains whole cells exactly as the stage's own process would
(``CellRunner.run``): same seeds, same resumable state in the cell's folder, its own
MLflow run under the pipeline's parent. The stage then reads every finished cell back, so
what it writes does not depend on which process trained what. It does depend, in the last
digits, on the torch threads per cell (float sums in another order; measured: 1 and 2
threads give other test accuracies): ``cell_processes`` is in the trainer config and so in
every cell's fingerprint; the machine's cores and OMP_NUM_THREADS are not.

Stopping: SIGTERM/SIGINT to the stage stops the workers with SIGTERM (each closes its run
KILLED, its finished cells are kept) before the stage exits; if the stage itself is killed,
the kernel sends each worker SIGTERM (``PR_SET_PDEATHSIG``), so no worker trains on alone.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from transferlab.training.runner import CellRunner


class Job(Protocol):
    """A unit of work a worker runs with its own runner: a ``CellSpec``, or a search (``training.tuning``)."""

    def run(self, runner: CellRunner) -> object: ...


PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the stage died before the line above took effect
        os._exit(1)


_worker: dict = {"training": False}  # in a worker: its CellRunner, and whether a cell trains now


def _on_signal(signum, frame) -> None:
    """In a cell: stop it (its run is closed KILLED, its last epoch kept). Idle: just exit."""
    from transferlab.core.errors import Interrupted

    if _worker["training"]:
        raise Interrupted(signum)
    os._exit(128 + signum)


def _start_worker(parent_pid: int, threads: int, cfg, state_root: Path, parent: str | None) -> None:
    import torch

    from transferlab.training.runner import CellRunner

    _stop_with_parent(parent_pid)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal)
    torch.set_num_threads(threads)
    _worker["runner"] = CellRunner(cfg, state_root, parent)


def _run_job(job: Job) -> None:
    from transferlab.core.errors import Interrupted
    from transferlab.core.stage import run_cleanups

    _worker["training"] = True
    try:
        job.run(_worker["runner"])
    except Interrupted:
        run_cleanups("KILLED")
        raise
    except BaseException:
        run_cleanups("FAILED")
        raise
    finally:
        _worker["training"] = False


class Workers:
    """The stage's worker processes, started when first needed and kept for the stage's every batch of jobs
    (a worker spends ~8-10 s on its imports: a pool per batch cost the race that for every look)."""

    def __init__(self, runner: CellRunner, processes: int):
        self.runner, self.processes = runner, processes
        self.pool: ProcessPoolExecutor | None = None
        self.threads = 1

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self.pool is None:
            return
        if kind is None:
            self.pool.shutdown(wait=True)
            return
        self.pool.shutdown(wait=False, cancel_futures=True)
        for worker in multiprocessing.active_children():
            worker.terminate()  # SIGTERM: the worker closes its run KILLED and exits
        for worker in multiprocessing.active_children():
            worker.join(timeout=60)

    def _started(self) -> ProcessPoolExecutor:
        import torch

        if self.pool is None:
            self.threads = max(1, torch.get_num_threads() // self.processes)  # the stage's threads, shared out
            self.pool = ProcessPoolExecutor(
                self.processes - 1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(), self.threads, self.runner.cfg, self.runner.state_root, self.runner.parent),
            )
        return self.pool

    def run(self, pending: list[Job]) -> None:
        """Run the jobs ``pending`` (cells, or whole searches): this process and the workers (each with a
        runner of its own for the same stage) take the next job when free, one core's share of torch
        threads each. This process works too. What a job makes is kept in the stage's state folder, from
        which the stage reads it back afterwards."""
        import torch

        if not pending:
            return
        if self.processes < 2 or len(pending) < 2:
            for job in pending:
                job.run(self.runner)
            return
        pool = self._started()
        print(
            f"running {len(pending)} jobs in {self.processes} processes, {self.threads} torch thread(s) each",
            flush=True,
        )
        queue, lock = list(pending), threading.Lock()
        in_flight: list[Future] = []
        failures: list[Future] = []

        def take() -> Job | None:
            with lock:
                return queue.pop(0) if queue and not failures else None

        def feed(finished: Future | None = None) -> None:
            """Give a free worker its next job (called again, from the pool's thread, when one is done)."""
            if finished is not None and finished.exception() is not None:
                failures.append(finished)
                return
            job = take()
            if job is not None:
                future = pool.submit(_run_job, job)
                in_flight.append(future)
                future.add_done_callback(feed)

        own_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            for _ in range(self.processes - 1):
                feed()
            while (mine := take()) is not None:
                mine.run(self.runner)
            wait(list(in_flight))
            for future in failures or in_flight:
                future.result()  # a worker's error (ConfigError, a crash) is the stage's
        except BaseException:  # that error, or SIGTERM/SIGINT to the stage (Interrupted)
            with lock:
                queue.clear()
            raise
        finally:
            torch.set_num_threads(own_threads)
