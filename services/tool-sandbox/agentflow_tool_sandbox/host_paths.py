"""Opens a profile's host paths for one call without following any symbolic link.

bwrap follows symlinks in a bind's source, so binding a granted path by name would let whoever can write
below it (another tool with a writable grant, a host user) plant `ln -s / granted/x` and have the next
call that reads `granted/x` see the host's `/`. Instead, each call walks every granted path from `/` one
component at a time (`O_PATH | O_NOFOLLOW`, relative to the previous component's descriptor) and refuses
the call if any component is a symlink; the descriptor of the last component is handed to bwrap
(`--ro-bind-fd` / `--bind-fd`), so the inode checked is the inode bound: renaming or replacing the path
after the check changes nothing (bwrap itself verifies the mount against the descriptor).

A path that does not exist is not bound (as before: a grant may name a directory that appears later).
Anything else that keeps a path from being opened safely refuses the call (FAILED_PRECONDITION
`UNSAFE_PATH`, audited as a sandbox denial): never a silent bind, never a silent skip.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from agentflow_tool_sandbox.denials import SandboxDenied
from agentflow_tool_sandbox.spec import Permissions

UNSAFE_PATH = "UNSAFE_PATH"
_ABSENT = (errno.ENOENT, errno.ENOTDIR)
_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class OpenedPath:
    """A granted host path, opened: bind `fd` (an O_PATH descriptor) at `path` in the sandbox."""

    path: str
    fd: int
    writable: bool


@contextmanager
def opened(permissions: Permissions, tool_id: str) -> Iterator[tuple[OpenedPath, ...]]:
    """Every existing read-only and writable path of `permissions`, opened (closed when the block ends);
    raises SandboxDenied `UNSAFE_PATH` when a path has a symlink in any component or cannot be opened."""
    found: list[OpenedPath] = []
    with contextlib.ExitStack() as fds:
        grants = [(p, False) for p in permissions.read_only_paths]
        grants += [(p, True) for p in permissions.writable_paths]
        for path, writable in grants:
            fd = open_no_symlinks(path, tool_id)
            if fd is not None:
                fds.callback(os.close, fd)
                found.append(OpenedPath(path, fd, writable))
        yield tuple(found)


def open_no_symlinks(path: str, tool_id: str = "") -> int | None:
    """An O_PATH descriptor of `path` reached without following a symlink, None when it does not exist."""
    parts = _components(path, tool_id)
    current = os.open("/", _FLAGS | os.O_DIRECTORY)
    walked = ""
    try:
        for part in parts:
            walked = f"{walked}/{part}"
            try:
                following = os.open(part, _FLAGS, dir_fd=current)
            except OSError as exc:
                if exc.errno in _ABSENT:
                    os.close(current)
                    return None
                raise _denied(path, walked, tool_id, f"cannot be opened ({exc.strerror or exc})") from exc
            os.close(current)
            current = following
            mode = os.fstat(current).st_mode
            if stat.S_ISLNK(mode):
                target = _readlink(walked)
                raise _denied(path, walked, tool_id, f"is a symbolic link (to {target!r})")
            if walked != path and not stat.S_ISDIR(mode):
                os.close(current)
                return None  # a file where a directory should be: the path does not exist
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(current)
        raise
    return current


def _components(path: str, tool_id: str) -> Sequence[str]:
    parts = path.split("/")[1:]
    if not path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in path:
        raise _denied(path, path, tool_id, "is not a normalized absolute path")
    return parts


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _denied(path: str, component: str, tool_id: str, why: str) -> SandboxDenied:
    where = "it" if component == path else f"its component {component}"
    return SandboxDenied(
        f"granted path {path} is not bound: {where} {why}; a profile must name the real path, with no "
        "symbolic link in any component",
        reason=UNSAFE_PATH,
        metadata={"tool": tool_id, "path": path, "component": component},
    )
