"""The entry point every stage shares: one-line errors, signals, clean-up, timing.

``run_stage(name, main)`` runs ``main(argv)`` and turns its outcome into an exit code:

- 0 done; 2 bad input (``ConfigError``: one line, ``error: ...``); 3 the tracking store
  cannot be used (``StoreError``); 75 another process runs the same stage (``StageBusy``);
- 128 + N when signal N (SIGTERM, SIGINT) stopped it. A signal raises ``Interrupted`` in the
  main thread wherever it is, so a stage stopped by a scheduler or Ctrl-C never exits 0:
  DVC does not record it as done, and ``dvc repro`` runs it again, which resumes it.

Whatever happens, the clean-up callbacks registered with ``on_exit`` run with the outcome
(``FINISHED``, ``FAILED`` or ``KILLED``): the tracking code uses them to close every MLflow
run it opened. With ``TRANSFERLAB_PROFILE=<file>`` set, one JSON line per stage records its
wall time, the time spent starting the interpreter and importing the heavy libraries, and
its peak resident memory (benchmarks/pipeline_stages.py reads it).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator

from transferlab.core.errors import ConfigError, Interrupted, StoreError
from transferlab.core.files import StageBusy

EXIT_BAD_INPUT, EXIT_STORE, EXIT_BUSY = 2, 3, 75
_cleanups: list[Callable[[str], None]] = []
_import_seconds = [0.0]


def on_exit(callback: Callable[[str], None]) -> Callable[[str], None]:
    """Run ``callback(status)`` when the stage ends, however it ends; returns it (for ``forget``)."""
    _cleanups.append(callback)
    return callback


def forget(callback: Callable[[str], None]) -> None:
    if callback in _cleanups:
        _cleanups.remove(callback)


@contextlib.contextmanager
def heavy_imports() -> Iterator[None]:
    """Time an import block (torch, Lightning, MLflow) for the profile record."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _import_seconds[0] += time.perf_counter() - started


def launched_as_global_zero() -> bool:
    """Whether this process is global rank 0, from the launcher's environment (before a Trainer exists).

    torchrun and SLURM set RANK / SLURM_PROCID; Lightning's own DDP launcher re-runs the
    stage command for each extra device with LOCAL_RANK (and NODE_RANK) set.
    """
    for variable in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if variable in os.environ:
            return int(os.environ[variable]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def process_age() -> float:
    """Seconds since this process started (Linux /proc), 0 where unknown."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def run_cleanups(status: str) -> None:
    while _cleanups:
        callback = _cleanups.pop()
        try:
            callback(status)
        except BaseException as err:  # clean-up must not hide the stage's own outcome
            print(f"warning: clean-up after {status} failed: {type(err).__name__}: {err}", file=sys.stderr)


def run_stage(name: str, main: Callable[[list[str]], None]) -> None:
    startup = process_age()
    started = time.perf_counter()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, raise_interrupted)
    code, status = 0, "FINISHED"
    try:
        main(sys.argv[1:])
    except StageBusy as err:
        code, status = EXIT_BUSY, "FAILED"
        print(f"error: {err}", file=sys.stderr)
    except ConfigError as err:
        code, status = EXIT_BAD_INPUT, "FAILED"
        print(f"error: {err}", file=sys.stderr)
    except StoreError as err:
        code, status = EXIT_STORE, "FAILED"
        print(f"error: {err}", file=sys.stderr)
    except Interrupted as err:
        code, status = 128 + err.signum, "KILLED"
        print(
            f"{name}: stopped by {signal.Signals(err.signum).name}; finished work is kept and the next run "
            f"(`dvc repro`) resumes from it",
            file=sys.stderr,
        )
    except KeyboardInterrupt:  # SIGINT before our handler was installed, or Lightning's own handling
        code, status = 128 + signal.SIGINT, "KILLED"
    except SystemExit as exit_:  # Lightning exits 1 after its own KeyboardInterrupt handling
        code = exit_.code if isinstance(exit_.code, int) else 1
        status = "FINISHED" if code == 0 else "FAILED"
    except BaseException:
        run_cleanups("FAILED")
        raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):  # no second signal may interrupt the clean-up
            signal.signal(signum, signal.SIG_IGN)
    run_cleanups(status)
    _write_profile(name, startup, time.perf_counter() - started, code)
    if _is_the_program(name):
        _exit_without_teardown(code)
    sys.exit(code)


def _is_the_program(name: str) -> bool:
    """Whether this process is `python -m transferlab.<name>` (not a test calling ``run_stage``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name == f"transferlab.{name}"


def _exit_without_teardown(code: int) -> None:
    """Exit now, skipping the interpreter's teardown: freeing the module graphs of torch, Lightning
    and MLflow took 2.3 s per stage process here (a script importing them and using the store
    ran 9.7 s with it, 7.6 s without). What must happen at exit still does: every output is
    written and closed by now, and the atexit handlers (logging, multiprocessing, MLflow)
    run first (0.04 s)."""
    import atexit

    atexit._run_exitfuncs()  # CPython's own hook for exactly this; os._exit would skip them
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _write_profile(name: str, startup: float, wall: float, code: int) -> None:
    profile = os.environ.get("TRANSFERLAB_PROFILE")
    if not profile:
        return
    peak_kb = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    record = {
        "stage": name,
        "argv": sys.argv[1:],
        "exit": code,
        "startup_s": round(startup, 2),
        "imports_s": round(_import_seconds[0], 2),
        "main_s": round(wall, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }
    with open(profile, "a") as handle:
        handle.write(json.dumps(record) + "\n")
