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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transferlab.training.runner import CellRunner, CellSpec

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


def _train_cell(spec: CellSpec) -> None:
    from transferlab.core.errors import Interrupted
    from transferlab.core.stage import run_cleanups

    _worker["training"] = True
    try:
        _worker["runner"].run(spec)
    except Interrupted:
        run_cleanups("KILLED")
        raise
    except BaseException:
        run_cleanups("FAILED")
        raise
    finally:
        _worker["training"] = False


def train_cells(runner: CellRunner, pending: list[CellSpec], processes: int) -> None:
    """Train the cells ``pending`` with ``runner``: this process and ``processes - 1`` workers (each with
    a runner of its own for the same stage) take the next cell when free, one core's share of torch
    threads each. This process trains too: a worker first spends ~8 s importing torch, Lightning and
    MLflow, which the stage has done already."""
    import torch

    if not pending:
        return
    processes = min(processes, len(pending))
    threads = max(1, torch.get_num_threads() // processes)  # the stage's threads (OMP_NUM_THREADS), shared out
    print(f"training {len(pending)} cells in {processes} processes, {threads} torch thread(s) each", flush=True)
    queue, lock = list(pending), threading.Lock()
    in_flight: list[Future] = []
    failures: list[Future] = []

    def take() -> CellSpec | None:
        with lock:
            return queue.pop(0) if queue and not failures else None

    def feed(finished: Future | None = None) -> None:
        """Give a free worker its next cell (called again, from the pool's thread, when one is done)."""
        if finished is not None and finished.exception() is not None:
            failures.append(finished)
            return
        cell = take()
        if cell is not None:
            future = pool.submit(_train_cell, cell)
            in_flight.append(future)
            future.add_done_callback(feed)

    pool = ProcessPoolExecutor(
        processes - 1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), threads, runner.cfg, runner.state_root, runner.parent),
    )
    own_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(processes - 1):
            feed()
        while (cell := take()) is not None:
            runner.run(cell)
        wait(list(in_flight))
        for future in failures or in_flight:
            future.result()  # a worker's error (ConfigError, a crash) is the stage's
    except BaseException:  # that error, or SIGTERM/SIGINT to the stage (Interrupted)
        with lock:
            queue.clear()
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in multiprocessing.active_children():
            worker.terminate()  # SIGTERM: the worker closes its run KILLED and exits
        for worker in multiprocessing.active_children():
            worker.join(timeout=60)
        raise
    finally:
        torch.set_num_threads(own_threads)
    pool.shutdown(wait=True)
