"""Helpers of the test suite's DDP isolation (imported by ``tests/conftest.py`` and tests).

A module with its own name: ``from conftest import ...`` is ambiguous in a full run, where
several ``conftest`` modules exist and the last one imported owns the name.
"""

import os
import socket
from itertools import count

#: wall-clock limit of the tests' subprocesses: a guard against a hang, not a speed test. On a
#: loaded 2-core machine (load ~17) the 2-rank CLI run took over 300 s — just starting its two
#: interpreters — so a tight limit made a correct run fail; gloo's own 30-minute timeout bounds a
#: real DDP hang.
SUBPROCESS_TIMEOUT_S = 1800

_PROBES = count()
#: the MASTER_PORT the session started with (normally unset); no test may leave another behind
SESSION_MASTER_PORT = os.environ.get("MASTER_PORT")


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(v) for v in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _port_is_free(port: int) -> bool:
    """Bind (no SO_REUSEADDR, so a port in TIME_WAIT counts as busy) on IPv4 and IPv6."""
    for family, host in ((socket.AF_INET, ""), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, port))
        except OSError as e:
            if family == socket.AF_INET6 and not socket.has_ipv6:
                continue
            if e.errno in (97, 99):  # address family / address not available: no IPv6 here
                continue
            return False
    return True


def free_port_outside_ephemeral_range() -> int:
    """A free TCP port that the kernel never hands out by itself.

    Lightning picks ``MASTER_PORT`` with ``bind(("", 0))`` and closes the socket, so the port is
    an *ephemeral* one: until rank 0's TCPStore binds it (seconds later, after the spawned
    workers have imported torch) any process on the machine that opens a socket may be given
    the same port, and rank 0 then fails with EADDRINUSE. Ports below the ephemeral range are
    only ever taken by an explicit ``bind``; the start is offset by the pid so that concurrent
    pytest sessions probe different ports.
    """
    lo, hi = _ephemeral_range()
    first, last = (20000, lo - 1) if lo > 21000 else (hi + 1, 65535)
    span = last - first + 1
    start = (os.getpid() * 7919 + next(_PROBES) * 104729) % span
    for i in range(span):
        port = first + (start + i) % span
        if _port_is_free(port):
            return port
    raise RuntimeError(f"No free TCP port in {first}..{last} for a DDP test.")
