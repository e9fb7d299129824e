"""Child processes that die with their parent, and a ledger of them for the next run.

A child gets PR_SET_PDEATHSIG, so a parent killed with SIGKILL takes its servers along. The
signal is set after any user switch, because the kernel clears it on a credential change.
Whatever still survives (another kernel, a detached grandchild) is recorded in a ledger file
that the next start reads to find and replace what a dead run left.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

__all__ = [
    "free_port",
    "spawn",
    "stop_process",
    "stop_all",
    "pid_alive",
    "Ledger",
    "wait_for_port",
    "service_user",
    "ServerProcess",
]

_PR_SET_PDEATHSIG = 1


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free TCP port on the loopback interface, below the kernel's ephemeral range: a port the
    kernel hands out itself (bind to 0) can be taken by any outgoing connection before the server
    we pick it for binds it (seen: a connector's metrics port, "Address already in use")."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10_000, low) if low > 10_100 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    with socket.socket() as sock:  # every try taken: fall back to the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, deadline_s: float, proc: subprocess.Popen[Any] | None = None) -> bool:
    """True once something accepts on 127.0.0.1:port; False at the deadline or if ``proc`` exits."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def service_user(name: str = "lifecycle") -> pwd.struct_passwd | None:
    """When running as root, the unprivileged account PostgreSQL must run as (created once)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


_DEFERRED = {signal.SIGINT, signal.SIGTERM}


def _child_setup(user: pwd.struct_passwd | None, death_signal: int) -> Any:
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED)  # the mask spawn() set survives exec
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        libc.prctl(_PR_SET_PDEATHSIG, death_signal)

    return setup


def spawn(
    argv: list[str],
    *,
    log: IO[bytes] | IO[str],
    user: pwd.struct_passwd | None = None,
    death_signal: int = signal.SIGTERM,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (Ctrl-C reaches only us; we stop children in order).

    Ctrl-C and SIGTERM are held back while the child is forked: a KeyboardInterrupt raised inside
    Python's at-fork handlers is printed and swallowed ("Exception ignored"), which made `lifecycle
    up` ignore a Ctrl-C that arrived while it started a connector. Held back, the signal is
    delivered right after the fork, where it interrupts as it should."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_child_setup(user, death_signal),
            env=env,
            cwd=cwd,
        )
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a held-back Ctrl-C is raised here
    except BaseException:
        stop_process(proc, signal.SIGKILL, timeout_s=5)  # the caller never saw it: leave nothing behind
        raise
    return proc


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def stop_process(proc: subprocess.Popen[Any] | int, sig: int = signal.SIGTERM, timeout_s: float = 10) -> None:
    """Send ``sig``, wait up to ``timeout_s``, then SIGKILL. Never raises for a gone process."""
    pid = proc if isinstance(proc, int) else proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if isinstance(proc, subprocess.Popen):
            if proc.poll() is not None:
                return
        elif not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if isinstance(proc, subprocess.Popen):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def stop_all(procs: list[tuple[subprocess.Popen[Any], int]], timeout_s: float = 15) -> None:
    """Signal every process at once, wait for all against one deadline, SIGKILL the rest."""
    for proc, sig in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and any(proc.poll() is None for proc, _ in procs):
        time.sleep(0.05)
    for proc, _ in procs:
        if proc.poll() is None:
            stop_process(proc, signal.SIGKILL, timeout_s=5)


class ServerProcess:
    """An embedded server: one child on a free loopback port, its output in ``log_path``.
    Subclasses give ``argv()``, ``stop_signal`` and how to tell it is ready."""

    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = 10

    def __init__(self, log_path: Path, port: int | None = None):
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[Any] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def _open_log(self) -> IO[Any]:
        if self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
        return self._log

    def _spawn(self, user: pwd.struct_passwd | None = None) -> subprocess.Popen[bytes]:
        self.proc = spawn(self.argv(), log=self._open_log(), user=user, death_signal=self.stop_signal)
        return self.proc

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, self.stop_signal, timeout_s=self.stop_timeout_s)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Ledger:
    """A JSON file listing the processes a run owns: ``{owner: pid, children: [{pid, cmd}]}``."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def reap_leftovers(self) -> list[int]:
        """Stop the children of a dead owner. Raises RuntimeError if the owner still runs.

        A recorded pid is only killed when its command line still matches what was recorded,
        so a pid reused by an unrelated process is left alone.
        """
        data = self.read()
        owner = data.get("owner")
        if isinstance(owner, int) and owner != os.getpid() and pid_alive(owner):
            raise RuntimeError(f"another lifecycle run (pid {owner}) is using {self.path.parent}")
        stopped = []
        for child in data.get("children", []):
            pid, cmd = child.get("pid"), child.get("cmd", "")
            if isinstance(pid, int) and pid_alive(pid) and cmd and _cmdline(pid).startswith(cmd):
                stop_process(pid, child.get("stop_signal", signal.SIGTERM))
                stopped.append(pid)
        self.clear()
        return stopped
