"""Applies rlimits, then becomes the tool: `python -I -S launch.py RLIMIT_X=SOFT:HARD ... -- argv...`.

The service spawns this small program instead of setting limits in a `preexec_fn`: no Python code may run
in a forked child of the multi-threaded service (gRPC's fork handlers crash there). It only lowers limits,
so it works unprivileged, and it fails closed: if a limit cannot be set, the tool does not start.
"""

from __future__ import annotations

import os
import resource
import sys

EXIT_NOT_FOUND = 127
EXIT_CANNOT_START = 126


def apply(spec: str) -> None:
    """Apply one `RLIMIT_NAME=SOFT:HARD`, never raising the current hard limit."""
    name, _, values = spec.partition("=")
    soft_text, _, hard_text = values.partition(":")
    which = getattr(resource, name)
    _, current_hard = resource.getrlimit(which)
    hard = int(hard_text)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
    resource.setrlimit(which, (min(int(soft_text), hard), hard))


def main(args: list[str]) -> None:
    split = args.index("--")
    argv = args[split + 1 :]
    try:
        for spec in args[:split]:
            apply(spec)
        os.execvp(argv[0], argv)
    except (OSError, ValueError, AttributeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        sys.stderr.write(f"cannot start {argv[0]!r}: {reason}\n")
        sys.stderr.flush()
        os._exit(EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_START)


if __name__ == "__main__":
    main(sys.argv[1:])
