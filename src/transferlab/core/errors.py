"""The errors a stage turns into one line and an exit code (transferlab.core.stage)."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input (config, arguments, missing or broken inputs): one line, exit code 2."""


class StoreError(RuntimeError):
    """The tracking store cannot be used (unreachable, locked, corrupt, read-only): one line, exit code 3."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: the stage saves what it can and exits 128 + the signal number.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum

    def __reduce__(self):  # from a worker process (training.parallel) with its signal number
        return type(self), (self.signum,)
