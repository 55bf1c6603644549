"""Runs first inside the sandbox: `python -I -S egress_forward.py SOCKET PORT -- argv...`.

It binds 127.0.0.1:PORT (0 = any free port) on the sandbox's own loopback, starts a detached forwarder that
copies each TCP connection on that port to the egress proxy's Unix socket SOCKET, then execs `argv` with
HTTP_PROXY / HTTPS_PROXY / ALL_PROXY (and their lowercase twins) set to `http://127.0.0.1:PORT`.

The forwarder is a grandchild of this process (the tool never sees an unexpected child), keeps the tool's
process group (it dies with it) and holds none of the tool's stdio (the tool's output ends when the tool
does). It is only a pipe: every decision is the proxy's, outside the sandbox. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys

EXIT_CANNOT_START = 126
PIPE_BYTES = 64 * 1024
TOOL_CHECK_SECONDS = 1.0
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class Flow:
    """One direction of a forwarded connection: bytes read from `src` waiting to be written to `dst`."""

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.pending = b""
        self.eof = False


class Forwarder:
    """A single-threaded select loop (cheap to start: no asyncio, no threads counted against the tool's
    process limit) copying every connection accepted on `listener` to a new connection to `path`."""

    def __init__(self, listener: socket.socket, path: str, tool_pid: int) -> None:
        self.listener, self.path, self.tool_pid = listener, path, tool_pid
        self.selector = selectors.DefaultSelector()
        self.flows: dict[socket.socket, tuple[Flow, Flow]] = {}  # socket -> (flow out of it, flow into it)
        self.masks: dict[socket.socket, int] = {}
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ)

    def run(self) -> None:
        """Serve until the tool is gone (the sandbox or the process group normally ends it first)."""
        while tool_alive(self.tool_pid):
            for key, events in self.selector.select(timeout=TOOL_CHECK_SECONDS):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    self.accept()
                elif sock in self.flows:
                    self.step(sock, events)

    def accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.path)
        except OSError:
            client.close()
            upstream.close()
            return
        for sock in (client, upstream):
            sock.setblocking(False)
        up, down = Flow(client, upstream), Flow(upstream, client)
        self.flows[client], self.flows[upstream] = (up, down), (down, up)
        for sock in (client, upstream):
            self.watch(sock)

    def step(self, sock: socket.socket, events: int) -> None:
        out, into = self.flows[sock]
        try:
            if events & selectors.EVENT_READ:
                data = sock.recv(PIPE_BYTES)
                if data:
                    out.pending = data
                else:
                    out.eof = True
                    if not out.pending:
                        out.dst.shutdown(socket.SHUT_WR)
            if events & selectors.EVENT_WRITE and into.pending:
                sent = sock.send(into.pending)
                into.pending = into.pending[sent:]
                if not into.pending and into.eof:
                    sock.shutdown(socket.SHUT_WR)
        except BlockingIOError:
            pass
        except OSError:
            self.close(sock)
            return
        if out.eof and into.eof and not out.pending and not into.pending:
            self.close(sock)
            return
        for each in (out.src, out.dst):
            self.watch(each)

    def watch(self, sock: socket.socket) -> None:
        """Wait for what `sock` can do next: read once its last bytes went out, write while some wait."""
        out, into = self.flows[sock]
        events = 0
        if not out.pending and not out.eof:
            events |= selectors.EVENT_READ
        if into.pending:
            events |= selectors.EVENT_WRITE
        registered = self.masks.get(sock, 0)
        if events == registered:
            return
        if not registered:
            self.selector.register(sock, events)
        elif not events:
            self.selector.unregister(sock)
        else:
            self.selector.modify(sock, events)
        self.masks[sock] = events

    def close(self, sock: socket.socket) -> None:
        out, _ = self.flows[sock]
        for each in (out.src, out.dst):
            self.flows.pop(each, None)
            if self.masks.pop(each, 0):
                self.selector.unregister(each)
            each.close()


def tool_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def detach_and_serve(listener: socket.socket, path: str, tool_pid: int) -> None:
    """In the forked child: fork again (the grandchild serves), so the tool has no stray child."""
    if os.fork() != 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    with contextlib.suppress(BaseException):
        Forwarder(listener, path, tool_pid).run()
    os._exit(0)


def main(args: list[str]) -> None:
    split = args.index("--")
    path, port_text = args[:split]
    argv = args[split + 1 :]
    try:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(port_text)))
        listener.listen(64)
        port = listener.getsockname()[1]
        tool_pid = os.getpid()  # this process becomes the tool
        child = os.fork()
        if child == 0:
            detach_and_serve(listener, path, tool_pid)
        os.waitpid(child, 0)
        listener.close()
        proxy = f"http://127.0.0.1:{port}"
        env = dict(os.environ)
        for name in PROXY_VARIABLES:
            env[name] = env[name.lower()] = proxy
        env["NO_PROXY"] = env["no_proxy"] = ""
        os.execvpe(argv[0], argv, env)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"egress forwarder: cannot start {argv[:1]}: {exc}\n")
        sys.stderr.flush()
        os._exit(EXIT_CANNOT_START)


if __name__ == "__main__":
    main(sys.argv[1:])
