#!/usr/bin/env python3
"""The two commands of the README, for a fresh machine with only Python 3.11+.

    python3 run.py demo     # the pipeline on the embedded broker and database, with a report
    python3 run.py test     # ruff, mypy --strict, then every test

Each creates ./.venv on first use and (re)installs the project from pyproject.toml whenever that
file changes, then runs `lifecycle demo` or the strict tools and `pytest` inside it. Extra
arguments are passed on to `lifecycle demo` or to pytest (`python3 run.py test -m unit`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("LIFECYCLE_VENV", ROOT / ".venv"))
BIN = VENV / "bin"
STAMP = VENV / ".installed-from"


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (run.py is started by whatever python3 the machine has)
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    print("installing the project and its dependencies from pyproject.toml", flush=True)
    subprocess.run(
        [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-e", f"{ROOT}[test]"],
        check=True,
    )
    STAMP.write_text(wanted)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test", "lifecycle"):
        sys.exit("usage: python3 run.py demo|test|lifecycle [ARGS...]")
    command, rest = sys.argv[1], sys.argv[2:]
    ensure_venv()
    os.chdir(ROOT)
    if command == "test":
        for tool in (["ruff", "check", "."], ["mypy"]):  # configured in pyproject.toml
            print(f"$ {' '.join(tool)}", flush=True)
            if subprocess.run([str(BIN / tool[0]), *tool[1:]]).returncode != 0:
                sys.exit(f"{tool[0]} found problems: fix them before the tests run")
        argv = [str(BIN / "python"), "-m", "pytest", *rest]
    elif command == "demo":
        argv = [str(BIN / "lifecycle"), "demo", *rest]
    else:
        argv = [str(BIN / "lifecycle"), *rest]
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
