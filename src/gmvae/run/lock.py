"""One run per folder: RUN/.lock, taken atomically by the process that trains there and held
for the life of the run; a second process is refused with a line naming the holder.

The lock file holds the holder's pid and host. It is created with O_CREAT | O_EXCL, so of two
processes only one can take it; it is removed on every way out of a run that Python sees
(results written, an error, SIGTERM / SIGINT). A process killed outright (SIGKILL, a crash)
leaves it behind: a lock of this host whose pid is no longer alive is stale, and taken over.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from gmvae.errors import GMVAEError

LOCK_FILE = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """The lock on a run folder, held once `acquire` returns."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_FILE
        self.held = False

    def acquire(self) -> RunLock:
        """Take the lock, taking over a stale one; raises GMVAEError if another live process
        holds it, OSError if the folder cannot be written."""
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._remove_if_stale():
                    raise GMVAEError(self._held_message()) from None
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return self
        raise GMVAEError(self._held_message())

    def check_free(self) -> None:
        """Raise the GMVAEError naming the holder if another live process holds the lock."""
        if not self.path.exists():
            return
        holder = self._holder()
        if holder == (os.getpid(), socket.gethostname()):
            return
        if holder is None or holder[1] != socket.gethostname() or _alive(holder[0]):
            raise GMVAEError(self._held_message())

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _holder(self) -> tuple[int, str] | None:
        try:
            pid, host = self.path.read_text().split()
            return int(pid), host
        except (OSError, ValueError):
            return None

    def _remove_if_stale(self) -> bool:
        """Remove the lock if its holder, on this host, has died; whether it was removed. A
        lock being written at this moment reads as unparsable and counts as held."""
        holder = self._holder()
        if holder is None or holder[1] != socket.gethostname() or _alive(holder[0]):
            return False
        # Renamed away first, so that of two processes that both found it stale only one
        # removes it; the other's rename fails and it tries O_EXCL again.
        aside = self.path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        aside.unlink(missing_ok=True)
        return True

    def _held_message(self) -> str:
        holder = self._holder()
        who = f"process {holder[0]} on {holder[1]}" if holder else "another process"
        return (
            f"run folder {self.path.parent} is in use by {who} (lock {self.path}); wait for it "
            "to finish, or remove the lock if that process is gone"
        )
