"""Files a driver makes for its workers, named after the driver (its pid and start time)
so that a later driver can remove them once it is gone: a driver killed by SIGKILL or
the OOM killer cannot remove its own. Names only, no lock (a record lock would meet the
claims' flocks on BSD kernels, and one taken once the file exists leaves a moment in
which a new file looks orphaned); a start time tells a reused pid apart.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil

__all__ = ["my_prefix", "remove_orphans"]


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), None if there is none."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _pid_namespace() -> int:
    """This process's PID namespace (Linux), 0 where there is no telling. Containers of
    one pod share /tmp and /dev/shm but not their pids: another namespace's files are
    never judged, since its processes cannot be seen from here."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def my_prefix(kind: str) -> str:
    """``procflow-<kind>-<pid namespace>-<pid>-<start time>-``: this process's names."""
    pid = os.getpid()
    return f"procflow-{kind}-{_pid_namespace()}-{pid}-{int(_start_time(pid) or 0)}-"


def remove_orphans(directory: str, kind: str) -> None:
    """Remove the files (or folders) of ``kind`` whose process is gone (best effort)."""
    named = re.compile(rf"procflow-{re.escape(kind)}-(\d+)-(\d+)-(\d+)-")
    namespace = _pid_namespace()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = named.match(name)
        if match is None or int(match[1]) != namespace:
            continue  # not one of these, or another namespace's
        started = _start_time(int(match[2]))
        if started is not None and abs(started - int(match[3])) <= 1:
            continue  # its process runs
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
