#!/usr/bin/env python3
"""Bootstrap and run Liteskill from a fresh clone with nothing but Python 3.11+.

    python3 .ci/dev.py serve [serve options]   start the platform (embedded PostgreSQL + Valkey)
    python3 .ci/dev.py test [pytest options]   run the whole test suite
    python3 .ci/dev.py sync                    only install the locked dependencies into .venv

It installs uv into .venv-tools (unless uv is already on PATH), then `uv sync --frozen` creates
.venv from uv.lock. Nothing is installed outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".venv-tools"
BIN = "Scripts" if os.name == "nt" else "bin"


def _uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    uv = TOOLS / BIN / "uv"
    if not uv.exists():
        print("dev: installing uv into .venv-tools", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
        subprocess.run([str(TOOLS / BIN / "python"), "-m", "pip", "install", "-q", "uv>=0.13"], check=True)
    return str(uv)


def sync() -> str:
    uv = _uv()
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run([uv, "sync", "--frozen", "--python", sys.executable], check=True, cwd=ROOT, env=env)
    return uv


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("serve", "test", "sync"):
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    sync()
    bin_dir = ROOT / ".venv" / BIN
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    if command == "sync":
        return 0
    if command == "serve":
        args = [str(bin_dir / "liteskill"), "serve", *rest]
    else:
        workers = os.environ.get("LITESKILL_TEST_WORKERS", "auto")
        args = [str(bin_dir / "python"), "-m", "pytest", "-n", workers, "-p", "no:cacheprovider", *rest]
    os.chdir(ROOT)
    if os.name == "nt":  # pragma: no cover
        return subprocess.call(args, env=env)
    os.execve(args[0], args, env)  # noqa: S606 - replace this process with the tool
    return 0  # unreachable


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
