"""A real PostgreSQL 15 server for the tests (Debian's binaries), started as the `postgres` user
(the server refuses root) in a temporary data folder, on a free port, with trust authentication on
127.0.0.1 only."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")


def available() -> bool:
    return BIN.is_dir() and (os.geteuid() != 0 or _postgres_user() is not None)


def _postgres_user():
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def _as_server_user(*command: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(prefix + list(command), check=True, capture_output=True, text=True)


@dataclass
class PostgresServer:
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/recycler"

    @classmethod
    def start_new(cls) -> PostgresServer:
        root = Path(tempfile.mkdtemp(prefix="recycler-pg-"))
        if os.geteuid() == 0:
            user = _postgres_user()
            os.chown(root, user.pw_uid, user.pw_gid)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = cls(root, port)
        _as_server_user(str(BIN / "initdb"), "-D", str(server.data), "--auth=trust", "-U", "postgres")
        server.start()
        _as_server_user(str(BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "recycler")
        return server

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        _as_server_user(str(BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        _as_server_user(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
