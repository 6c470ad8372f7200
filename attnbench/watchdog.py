"""Time limits and signals for measurements that may run long.

A long torch call cannot be interrupted: Python runs a signal handler only when the call returns, so Ctrl-C inside
a minute-long CPU operator waited a minute (issue 21). Here a cell runs on a worker thread while the main thread
waits, where Ctrl-C and SIGTERM act at once; the cell checks its limit between two calls (`check`), and a cell
still inside one call well past its limit is given up (`Stuck`).

    sigterm_as_interrupt()     context: SIGTERM raises errors.Terminated (a KeyboardInterrupt) in the main thread
    run_limited(fn, seconds)   fn() on a worker thread under a time limit; the caller stays responsive
    check()                    in the worker, between two calls: CellTimeout past the limit or once cancelled
    seconds_left()             what the running cell has left (None outside one)
    left_running()             a worker given up while inside a call is still running (the process should end
                               with os._exit: letting the interpreter finalise under it can abort in torch)
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any, Callable, Iterator

from attnbench.errors import CellTimeout, Terminated

GRACE_S = 5.0  # how long past its limit a cell may take to reach its next check before it is given up
CANCEL_WAIT_S = 0.5  # on Ctrl-C, how long the worker gets to stop (and kill a child process) before we go on
POLL_S = 0.05


class Stuck(CellTimeout):
    """A cell still inside one call `GRACE_S` past its limit: torch cannot stop a call midway, so the worker thread
    is left running (it ends with the process) and nothing more should be measured in this process."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside: SIGTERM raises Terminated in the main thread, so that it takes Ctrl-C's path (what finished
    is kept, the command says so) and the command exits 143. A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _Limit:
    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.monotonic()
        self.cancelled = threading.Event()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)


_local = threading.local()
_given_up: list[threading.Event] = []  # the end events of workers left inside a call (Ctrl-C, SIGTERM, Stuck)


def check() -> None:
    """Called between two calls of a measurement: CellTimeout when the running cell passed its limit or was cancelled
    (Ctrl-C in the main thread). A no-op outside a cell run by run_limited."""
    limit: _Limit | None = getattr(_local, "limit", None)
    if limit is None:
        return
    if limit.cancelled.is_set():
        raise CellTimeout("cancelled")
    if limit.left() <= 0:
        raise CellTimeout(f"stopped at the {limit.seconds:.3g} s limit (--timeout)")


def seconds_left() -> float | None:
    limit: _Limit | None = getattr(_local, "limit", None)
    return None if limit is None else limit.left()


def run_limited(fn: Callable[[], Any], seconds: float) -> Any:
    """fn() on a worker thread under a limit of `seconds`; returns its value or raises what it raised.

    fn is expected to call check() between its calls, which raises CellTimeout there once the limit has passed.
    Waiting here, the main thread acts on Ctrl-C and SIGTERM at once: it cancels the cell (its next check raises),
    gives it CANCEL_WAIT_S to stop, and re-raises. A cell that has not returned GRACE_S after its limit raises
    Stuck here and is left running."""
    limit = _Limit(seconds)
    box: dict[str, Any] = {}
    # The worker's end is this event, not Thread.join/is_alive: on CPython before 3.13 a KeyboardInterrupt that lands
    # inside Thread.join marks a thread that is still running as stopped (threading._wait_for_tstate_lock releases
    # the running thread's lock on the way out, bpo-45274's handler), so is_alive() says False while the worker is
    # still inside torch; the process then finalised under it and aborted ("terminate called without an active
    # exception", exit 134 instead of 130). Event.wait has no such state to corrupt.
    finished = threading.Event()

    def work() -> None:
        _local.limit = limit
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the waiting thread, which raises it
            box["error"] = e
        finally:
            finished.set()

    threading.Thread(target=work, name="attnbench-cell", daemon=True).start()
    try:
        while not finished.wait(POLL_S):
            if limit.left() < -GRACE_S:
                limit.cancelled.set()
                _given_up.append(finished)
                raise Stuck(f"still inside one call {GRACE_S:.3g} s after the {seconds:.3g} s limit (--timeout); "
                            f"torch cannot stop a call midway")
    except KeyboardInterrupt:
        limit.cancelled.set()
        if not finished.wait(CANCEL_WAIT_S):
            _given_up.append(finished)
        raise
    if "error" in box:
        raise box["error"]
    return box.get("value")


def left_running() -> bool:
    """A worker given up inside a call is still running: ending the interpreter normally under it can abort in torch's
    destructors ("terminate called without an active exception", exit 134 instead of 130), so main() ends the
    process with os._exit once its output is flushed."""
    return any(not done.is_set() for done in _given_up)
