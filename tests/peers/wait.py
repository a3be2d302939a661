"""Bounded waiting (wait_until) and the lifecycle of peer processes (spawn, stop_process)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class WaitAbortedError(RuntimeError):
    """Raised when the ``abort`` callback of :func:`wait_until` reports a reason to stop."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
    *,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value.

    Returns that value. Exceptions raised by ``predicate`` count as "not yet" (the last one is
    quoted in the error). ``abort`` is called before each try; if it returns a non-empty string
    (e.g. "process exited with code 1") the wait stops at once with :class:`WaitAbortedError`.

    Raises :class:`TimeoutError` naming ``what`` and the time waited when the deadline passes.
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    start = time.monotonic()
    deadline = start + timeout
    last_error: BaseException | None = None
    attempts = 0
    while True:
        if abort is not None:
            reason = abort()
            if reason:
                raise WaitAbortedError(
                    f"gave up waiting for {what} after {time.monotonic() - start:.1f}s: {reason}"
                )
        attempts += 1
        try:
            value = predicate()
        except Exception as exc:  # a predicate that raises means "not ready yet"
            last_error = exc
        else:
            if value:
                return value
        now = time.monotonic()
        if now >= deadline:
            detail = f"; last error: {last_error!r}" if last_error is not None else ""
            raise TimeoutError(
                f"timed out after {now - start:.1f}s ({attempts} tries) waiting for {what}{detail}"
            )
        time.sleep(max(0.0, min(interval, deadline - now)))


# --------------------------------------------------------------------------------------------
# Process lifecycle: the peers start their servers with spawn() and end them with
# stop_process(); both act on the one PID they started, never by name.
# --------------------------------------------------------------------------------------------


_live: dict[int, subprocess.Popen[bytes]] = {}
# util-linux's setpriv (Essential on Debian) sets the parent-death signal and then execs the
# command, so the PID stays the server's own. (A preexec_fn calling prctl would do the same but
# is unsafe in a process with threads, such as one holding gRPC clients.)
_SETPRIV = shutil.which("setpriv")


def spawn(
    cmd: Sequence[str | os.PathLike[str]],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session with stdout+stderr appended to ``log_path``.

    With ``die_with_parent`` the child gets SIGTERM when the thread that spawned it ends (so a
    killed pytest leaves no server behind): start long-lived peers from the main thread, not
    from a short-lived worker thread. Live processes are also stopped at interpreter exit.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [os.fspath(c) for c in cmd]
    if die_with_parent and _SETPRIV is not None:
        argv = [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]
    with open(log_path, "ab") as log:
        log.write(f"\n===== starting: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd is not None else None,
            start_new_session=True,
        )
    _live[proc.pid] = proc
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """SIGTERM the process by PID, wait up to ``timeout`` s, then SIGKILL (its own group).

    Returns the exit code (None only if even SIGKILL did not reap it within 5 s).
    """
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    # start_new_session=True made the child the leader of its own group, so
                    # this reaches only what it started.
                    if os.getpgid(proc.pid) == proc.pid:
                        os.killpg(proc.pid, signal.SIGKILL)
                    else:
                        os.kill(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5.0)
        return proc.returncode
    finally:
        if proc.returncode is not None:
            _live.pop(proc.pid, None)


def describe_exit(proc: subprocess.Popen[bytes] | None) -> str | None:
    """For ``wait_until(abort=...)``: a reason string once the process has exited."""
    if proc is None:
        return "process not started"
    code = proc.poll()
    if code is None:
        return None
    return f"process {proc.pid} exited with code {code}"


def tail(path: Path, max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of a log file, for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_live.values()):
        with contextlib.suppress(Exception):
            stop_process(proc, timeout=5.0)
