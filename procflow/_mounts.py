"""Which filesystem a store is on: SQLite's locking is unsafe on a network one.

Read from ``/proc/mounts`` (Linux): the deepest mount point holding the path.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

__all__ = ["MOUNTS", "NETWORK_FS", "warn_if_network_fs"]

MOUNTS = "/proc/mounts"
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "fuse.sshfs", "9p", "lustre", "gpfs"})


def warn_if_network_fs(path: Path) -> None:
    """Warn when ``path`` is on a network filesystem, where SQLite's locking is unsafe."""
    if not sys.platform.startswith("linux"):
        return
    try:
        with open(MOUNTS, encoding="utf-8", errors="replace") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return
    target, best, fstype = str(path), "", ""
    for fields in (line.split() for line in lines):
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])  # \040 = space
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the deepest mount, the last one on ties
            best, fstype = point, fields[2]
    if fstype in NETWORK_FS or fstype.startswith("smb"):
        warnings.warn(
            f"the procflow store {target!r} is on a {fstype} network filesystem: SQLite's "
            "locking needs every process that opens it on one host, or the store may be "
            "corrupted; prefer a local disk",
            RuntimeWarning,
            stacklevel=4,
        )
