"""A throwaway PostgreSQL cluster on loopback (Debian's postgresql, which `make setup-test` installs), run as
the `postgres` user when run as root: for the tests' job-store fixture and the queue benchmark."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from svd_triton.launcher import free_port


class PostgresMissing(RuntimeError):
    pass


@contextmanager
def throwaway_postgres():
    """Yields the SQLAlchemy URL of a fresh cluster's `postgres` database; the cluster is deleted after."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not binaries:
        raise PostgresMissing("PostgreSQL is not installed (make setup-test installs Debian's postgresql)")
    bin_dir = binaries[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="svd-postgres-"))
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    subprocess.run([*as_user, bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-t", "60", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
