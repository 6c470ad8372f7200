"""The one exception type a user can cause, the exit codes, and the one classifier of failed measurements.

Exit codes, the same in every command (the CLI's `main()` turns an AttnbenchError into one red line and its code):
    0    done
    1    a run or measurement failed (non-finite loss, a crashed attention, a record that could not be written)
    2    bad input: an option, name, size, path or device the command cannot use (Typer's usage errors are 2 too)
    130  interrupted (Ctrl-C); what finished is on disk
    143  terminated (SIGTERM), where a command handles it: as Ctrl-C, what finished is on disk
    75   train --stop-after: stopped where the next stretch would not end in time; continue with --resume
A measurement that ends out of memory or not applicable (oom, n/a) is a result, not a failure; one that ends in an
error or past its time limit (error, timeout) is a failure: the command still finishes the others, then exits 1.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended
EXIT_STOPPED = 75  # sysexits.h's EX_TEMPFAIL ("try again later"): a batch job's requeue code
FAILED_STATUSES = ("error", "timeout")  # a record with one of these makes its command exit 1


class AttnbenchError(Exception):
    """A problem the user can fix (bad name, impossible shape, missing file, no GPU, ...). Exit code 2 unless said."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


class RunFailed(AttnbenchError):
    """A run that started and did not finish well; what it measured is kept (exit code 1)."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_FAILED)


class Interrupted(AttnbenchError):
    """Ctrl-C (or SIGTERM) after something was written: the message says what was kept and how to continue
    (exit code 130, or 143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: int = EXIT_INTERRUPTED):
        super().__init__(message, exit_code)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where a command handles it (watchdog.sigterm_as_interrupt) so that it takes Ctrl-C's path:
    what finished is kept; the command exits 143 instead of 130."""


class CellTimeout(Exception):
    """A measurement stopped at its time limit (status 'timeout')."""


# Substrings of out-of-memory messages that come without torch.OutOfMemoryError: the CPU allocator's
# "DefaultCPUAllocator: can't allocate memory: you tried to allocate ...", the OS's "Cannot allocate memory".
_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory")
_UNSUPPORTED_TEXT = ("not supported", "no available kernel")


def classify(e: BaseException) -> tuple[str, str]:
    """A failed measurement as (status, reason): 'oom', 'n/a' (unsupported setting), 'timeout' or 'error'.
    Used alike by the speed and memory sweeps (and their fresh-process worker) and by training."""
    text = str(e).strip()
    msg = text.splitlines()[0] if text else type(e).__name__
    low = text.lower()
    if isinstance(e, CellTimeout):
        return "timeout", msg[:200]
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or any(s in low for s in _OOM_TEXT):
        return "oom", msg[:200]
    if isinstance(e, (AttnbenchError, NotImplementedError)) or any(s in low for s in _UNSUPPORTED_TEXT):
        return "n/a", msg[:200]
    return "error", f"{type(e).__name__}: {msg}"[:300]
