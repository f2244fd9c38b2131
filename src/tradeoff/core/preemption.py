"""Stop requests: SIGTERM and SIGUSR1 (what SLURM sends before preemption or the time limit) and
SIGUSR2 (submitit's preemption and time-out signal) ask the training loop to write a snapshot at
the next step boundary and stop; the command then exits with status 75 (EX_TEMPFAIL: resumable)."""

from __future__ import annotations

import signal
import threading

EXIT_RESUMABLE = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(Exception):
    """Training stopped on request after writing a snapshot; the run folder resumes from it."""


class StopRequests:
    """While active, the stop signals set :attr:`requested` instead of killing the process.
    Outside the main thread (where handlers cannot be installed) it never requests a stop."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> bool:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        return False
