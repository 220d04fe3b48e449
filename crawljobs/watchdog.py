"""What ``crawljobs up`` started does not outlive it, however it stops (a SIGKILL or an OOM kill included).

``up`` starts this module as a small process of its own (``python -m crawljobs.watchdog FD``) and keeps the only
write end of a pipe whose read end the watchdog holds. As ``up`` starts each thing it writes a line naming it:
``group PID`` (a child in a process group of its own: a worker, the sweeper, Redis) or ``postgres DIR`` (the
embedded PostgreSQL, whose postmaster runs detached, its pid in ``DIR/postmaster.pid``). When ``up`` stops
cleanly it has stopped them itself and writes ``done``. When the pipe closes without ``done``, ``up`` died: the
kernel closed its end, and the watchdog stops everything named (SIGTERM, PostgreSQL's fast shutdown, then
SIGKILL after a grace period) and exits. A parent-death signal would not do: it reaches only direct children,
and the postmaster is not one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

GRACE_SECONDS = 10.0


class Watchdog:
    """``up``'s side: names what it starts; `release` once it has stopped all of it itself."""

    def __init__(self, process: subprocess.Popen[bytes], pipe: int) -> None:
        self.process = process
        self._pipe: int | None = pipe

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[Watchdog]:
        """A watchdog for the duration of the block, released at its end (whatever it raised)."""
        read_end, write_end = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "crawljobs.watchdog", str(read_end)],
                pass_fds=(read_end,),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # neither a Ctrl-C in the terminal nor a kill of up's group reaches it
            )
        finally:
            os.close(read_end)
        watchdog = cls(process, write_end)
        try:
            yield watchdog
        finally:
            watchdog.release()

    def _say(self, line: str) -> None:
        if self._pipe is not None:
            os.write(self._pipe, (line + "\n").encode())

    def group(self, pid: int) -> None:
        """Stop the process group of ``pid`` (a child started in a session of its own) if ``up`` dies."""
        self._say(f"group {pid}")

    def postgres(self, directory: Path) -> None:
        """Shut down the PostgreSQL whose data directory is ``directory`` if ``up`` dies."""
        self._say(f"postgres {directory}")

    def release(self) -> None:
        """Everything named was stopped: the watchdog exits without touching anything."""
        if self._pipe is None:
            return
        try:
            self._say("done")
        finally:
            os.close(self._pipe)
            self._pipe = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def _postmaster_pid(directory: Path) -> int | None:
    try:
        return int((directory / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pid: int, sig: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_all(groups: list[int], postmasters: list[int], grace: float = GRACE_SECONDS) -> None:
    """Stop the children's groups (SIGTERM) and the postmasters (SIGINT: fast shutdown), the PostgreSQL ones
    last (the children may still be writing to them); SIGKILL whatever is left after ``grace`` seconds."""
    for pid in reversed(groups):
        _signal(pid, signal.SIGTERM, group=True)
    deadline = time.monotonic() + grace
    while any(pid_alive(pid) for pid in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in postmasters:
        _signal(pid, signal.SIGINT, group=False)
    while any(pid_alive(pid) for pid in postmasters) and time.monotonic() < deadline + grace:
        time.sleep(0.05)
    for pid in groups:
        _signal(pid, signal.SIGKILL, group=True)
    for pid in postmasters:
        if pid_alive(pid):
            _signal(pid, signal.SIGQUIT, group=False)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: list[int] = []
    directories: list[Path] = []
    done = False
    with os.fdopen(int(argv[1]), "rb") as pipe:
        for raw in pipe:  # ends when up closes its end, or dies
            kind, _, value = raw.decode().strip().partition(" ")
            if kind == "group":
                groups.append(int(value))
            elif kind == "postgres":
                directories.append(Path(value))
            elif kind == "done":
                done = True
    if done:
        return 0
    postmasters = [pid for pid in map(_postmaster_pid, directories) if pid is not None]
    stop_all(groups, postmasters)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
