"""What /proc says about a process tree: descendants, their command lines, whether they live."""

from __future__ import annotations

import os
import re


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return after_name[0], int(after_name[1])  # state, ppid


def alive(pid: int) -> bool:
    """True while the pid exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                children.setdefault(stat[1], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except FileNotFoundError:
        return []


def ports_in(argv: list[str]) -> list[int]:
    """Loopback ports a child was told to listen on (`--port N`, `--web.listen-address=H:N`)."""
    ports = [int(argv[i + 1]) for i, arg in enumerate(argv[:-1]) if arg == "--port"]
    for arg in argv:
        match = re.match(r"--web\.listen-address=.*:(\d+)$", arg)
        if match:
            ports.append(int(match.group(1)))
    return ports
