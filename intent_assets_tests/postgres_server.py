"""A throwaway PostgreSQL server for tests: its own data folder, bound to 127.0.0.1 on a free port.

Uses the Debian PostgreSQL binaries (``apt-get install postgresql``; ``.ci/run`` installs them). As root, the
server runs as the ``postgres`` system user (initdb refuses root). The password is generated per run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl, or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server(bin_dir: Path) -> Iterator[dict]:
    """Start a server; yield ``{"host", "port", "user", "password", "db"}``; stop it and delete its files."""
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="intent-pg-"))
    data, port, password = root / "data", _free_port(), secrets.token_hex(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if as_root:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    os.chmod(pwfile, 0o600)
    log = root / "server.log"
    try:
        subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster", "--pwfile", str(pwfile),
                        "--auth", "scram-sha-256", "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off"
        subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
                        "start"], check=True, capture_output=True)
        try:
            subprocess.run([*run_as, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster",
                            "dagster_test"], check=True, capture_output=True, env={**os.environ, "PGPASSWORD": password})
            yield {"host": "127.0.0.1", "port": port, "user": "dagster", "password": password, "db": "dagster_test"}
        finally:
            subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
