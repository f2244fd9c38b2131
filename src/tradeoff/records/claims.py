"""Claims: which process may write a shared file of an output folder right now, across processes and
the nodes of a shared filesystem (NFS included), without relying on file locks.

A claim on ``PATH`` is the file ``PATH.claim``, linked into place whole (``link`` fails when the
name exists, atomically, on NFS too) and holding its holder's host, pid and a random token. While
held, a daemon thread touches it every ``lease / 4`` seconds: its modification time is the heartbeat. A claim is stale
when its holder is known dead (same host, no such pid) or its heartbeat is older than ``lease``
(another host, or a stopped process); a stale claim is broken under a second, short claim
(``PATH.claim.break``) so that two processes recovering it at once cannot remove a fresh one.

Every read-modify-write of a shared file (``summary.csv``, the sweep manifests, the job record,
the error log, a run folder's metrics.json after the run) happens inside the claim on that file;
a sweep holds one on its output folder and every run one on its run folder for as long as it runs.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from tradeoff.core.errors import TradeoffError

LEASE_SECONDS = 60.0  # a holder silent for longer (no heartbeat) is taken for dead; well above clock skew
WAIT_SECONDS = 120.0  # how long a claim on a shared file is waited for before giving up


class ClaimHeld(TradeoffError):
    """Another live process holds the claim."""


def claim_path(path: Path) -> Path:
    path = Path(path)
    return path.parent / f"{path.name}.claim"


def read_holder(claim_file: Path) -> dict | None:
    """The holder recorded in a claim file, ``{}`` when unreadable (being written), None when absent."""
    try:
        holder = json.loads(Path(claim_file).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except PermissionError:  # someone else's process: alive
        return True
    except (OSError, ValueError, TypeError):
        return False
    return True


def heartbeat_age(claim_file: Path) -> float | None:
    try:
        return time.time() - Path(claim_file).stat().st_mtime
    except FileNotFoundError:
        return None


def is_stale(claim_file: Path, holder: dict, lease: float) -> bool:
    """Whether the claim's holder is gone: dead on this host, or silent for longer than ``lease``."""
    if holder.get("host") == socket.gethostname() and holder.get("pid") and not pid_alive(holder["pid"]):
        return True
    age = heartbeat_age(claim_file)
    return age is not None and age > lease


def silent(claim_file: Path, lease: float) -> bool:
    """Whether the holder has missed two heartbeats: likely dead (a job of a failed node, whose
    requeued job is waiting), so it is waited for until its lease ends instead of refused."""
    age = heartbeat_age(claim_file)
    return age is not None and age > lease / 2


def describe(holder: dict) -> str:
    since = holder.get("since")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if since else ""
    return f"process {holder.get('pid', '?')} on {holder.get('host', '?')}{when}"


def _create(claim_file: Path, content: str) -> bool:
    """Create ``claim_file`` holding ``content`` if it does not exist; whether this call created it.

    The content is written to a private file first and hard-linked into place (atomic, and failing
    when the name exists, on local filesystems and NFS alike), so a claim never shows a reader an
    empty or half-written holder. Filesystems without hard links fall back to ``O_EXCL``."""
    private = claim_file.parent / f".{claim_file.name}.{secrets.token_hex(6)}"
    try:
        private.write_text(content)
        try:
            os.link(private, claim_file)
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            return _create_exclusive(claim_file, content)
        return True
    finally:
        private.unlink(missing_ok=True)


def _create_exclusive(claim_file: Path, content: str) -> bool:
    try:
        fd = os.open(claim_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    return True


class Claim:
    """The claim on ``path`` (a context manager). ``wait``: seconds to wait for a live holder
    before :class:`ClaimHeld` (0: refuse at once; a holder silent for two heartbeats is waited
    for until its lease ends); ``what``: how the refusal names the thing."""

    def __init__(self, path: Path, wait: float = WAIT_SECONDS, lease: float | None = None, what: str | None = None):
        self.target = Path(path)
        self.file = claim_path(self.target)
        self.wait, self.lease = wait, LEASE_SECONDS if lease is None else lease
        self.what = what or str(self.target)
        self.token = secrets.token_hex(8)
        self.lost = False  # the claim was taken from this process (its heartbeat stopped too long)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def holder(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token, "since": time.time(),
                "lease": self.lease}

    def acquire(self) -> "Claim":
        deadline = time.monotonic() + self.wait
        pause = 0.005
        self.file.parent.mkdir(parents=True, exist_ok=True)
        while not _create(self.file, json.dumps(self.holder()) + "\n"):
            holder = read_holder(self.file)
            if holder is None:  # released meanwhile
                continue
            if is_stale(self.file, holder, self.lease):  # an empty holder: its creator died mid-write
                break_stale(self.file, holder.get("token"), self.lease)
                continue
            if time.monotonic() >= deadline and not silent(self.file, self.lease):
                who = describe(holder) if holder else "another process"
                raise ClaimHeld(f"{self.what} is being written by {who}; wait for it to finish, or use another "
                                "output folder.")
            time.sleep(pause)
            pause = min(0.2, pause * 2)
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease / 4):
            if not self.held():
                self.lost = True
                return
            try:
                os.utime(self.file)
            except OSError:
                pass

    def held(self) -> bool:
        holder = read_holder(self.file)
        return holder is not None and holder.get("token", self.token) == self.token

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.held():
            self.file.unlink(missing_ok=True)

    def check(self) -> None:
        """One sentence when the claim was lost (this process stopped beating for over a lease)."""
        if self.lost or not self.held():
            raise ClaimHeld(f"{self.what} was taken over by another process while this one was stalled; "
                            "its work is left to that process.")

    def __enter__(self) -> "Claim":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def break_stale(claim_file: Path, token: str | None, lease: float) -> None:
    """Remove ``claim_file`` if it still holds the stale claim ``token``, under the break claim
    (itself broken when older than a lease: a recoverer killed mid-way)."""
    breaker = Path(f"{claim_file}.break")
    if not _create(breaker, f"{socket.gethostname()} {os.getpid()}\n"):
        age = heartbeat_age(breaker)
        if age is not None and age > lease:
            breaker.unlink(missing_ok=True)
        else:
            time.sleep(0.01)
        return
    try:
        holder = read_holder(claim_file)
        if holder is not None and holder.get("token") == token and is_stale(claim_file, holder, lease):
            claim_file.unlink(missing_ok=True)
    finally:
        breaker.unlink(missing_ok=True)
