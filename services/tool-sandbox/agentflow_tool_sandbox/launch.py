"""Sets up the tool's process, then becomes the tool:
`python -I -S launch.py [--env-fd N] [--usage-fd N] [--user UID:GID] RLIMIT_X=SOFT:HARD ... -- argv...`.

The service spawns this small program instead of setting limits in a `preexec_fn`: no Python code may run
in a forked child of the multi-threaded service (gRPC's fork handlers crash there). In order:

- `--env-fd N`: the tool's whole environment, as JSON, is read from fd N (so values never appear on a
  command line, where any host process could read them) and replaces this process's environment.
- rlimits are applied (only ever lowered).
- `--user UID:GID` (inside the bubblewrap sandbox, started as root with only CAP_SETUID, CAP_SETGID and
  CAP_SETPCAP): the capability bounding set is emptied, supplementary groups are dropped and the real,
  effective and saved ids become UID:GID, which clears every remaining capability. Then it is checked.

- `--usage-fd N` (inside the sandbox, where bwrap's pid 1 is not reaped by the service, so `wait4` there
  would not see the tool's usage): the launcher forks; the child goes on as above and becomes the tool;
  this process (with `--user`, as nobody: no capability, and a uid the tool can neither signal nor
  trace) waits for it, writes its resource usage as JSON on fd N and exits the way it did.

It fails closed: if any step fails, the tool does not start.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys

EXIT_NOT_FOUND = 127
EXIT_CANNOT_START = 126
PR_CAPBSET_DROP = 24
LAST_CAP = 63
WATCHER_ID = 65534
"""The watching launcher's uid:gid with `--user` (nobody): no capability, and not the tool's uid."""


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


def read_env(fd: int) -> dict[str, str]:
    """The environment sent on `fd` (read to its end, then closed)."""
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    os.close(fd)
    env = json.loads(data)
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ValueError("the environment must be a JSON object of strings")
    return env


def become(uid: int, gid: int) -> None:
    """Drop every capability for good and switch to `uid`:`gid` (raises when anything is left)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(LAST_CAP + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: no such cap
            raise OSError(ctypes.get_errno(), f"cannot drop capability {cap} from the bounding set")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if (
        os.getresuid() != (uid, uid, uid)
        or os.getresgid() != (gid, gid, gid)
        or os.getgroups() not in ([], [gid])
    ):
        raise OSError(1, "the sandbox user was not fully applied")
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("CapPrm:", "CapEff:", "CapBnd:", "CapAmb:")) and int(line.split()[1], 16):
                raise OSError(1, f"capabilities remain after the switch: {line.strip()}")


def main(args: list[str]) -> None:
    split = args.index("--")
    argv = args[split + 1 :]
    options = args[:split]
    env: dict[str, str] | None = None
    user: tuple[int, int] | None = None
    usage_fd: int | None = None
    try:
        while options and options[0].startswith("--"):
            flag, value = options[0], options[1]
            options = options[2:]
            if flag == "--env-fd":
                env = read_env(int(value))
            elif flag == "--usage-fd":
                usage_fd = int(value)
            elif flag == "--user":
                uid_text, _, gid_text = value.partition(":")
                user = int(uid_text), int(gid_text)
            else:
                raise ValueError(f"unknown launcher option {flag}")
        for spec in options:
            apply(spec)
        if usage_fd is not None and os.fork() != 0:
            if user is not None:
                become(WATCHER_ID, WATCHER_ID)
            watch(usage_fd)
        if usage_fd is not None:
            os.close(usage_fd)
        if user is not None:
            become(*user)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        os.execvp(argv[0], argv)
    except (OSError, ValueError, AttributeError, IndexError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        sys.stderr.write(f"cannot start {argv[0] if argv else '?'!r}: {reason}\n")
        sys.stderr.flush()
        os._exit(EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_START)


def watch(usage_fd: int) -> None:
    """Wait for the tool (this process's only child), report its usage on `usage_fd`, exit as it did."""
    for ignored in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(ignored, signal.SIG_IGN)
    _, status, usage = os.wait4(-1, 0)
    report = {"cpu_seconds": usage.ru_utime + usage.ru_stime, "max_rss_bytes": usage.ru_maxrss * 1024}
    try:
        os.write(usage_fd, json.dumps(report).encode())
        os.close(usage_fd)
    except OSError:
        pass
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main(sys.argv[1:])
