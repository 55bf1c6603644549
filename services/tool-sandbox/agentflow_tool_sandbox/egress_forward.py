"""Runs first inside the sandbox: `python -I -S egress_forward.py SOCKET PORT -- argv...`.

It binds 127.0.0.1:PORT (0 = any free port) on the sandbox's own loopback, starts a detached forwarder that
copies each TCP connection on that port to the egress proxy's Unix socket SOCKET, then execs `argv` with
HTTP_PROXY / HTTPS_PROXY / ALL_PROXY (and their lowercase twins) set to `http://127.0.0.1:PORT`.

The forwarder is a grandchild of this process (the tool never sees an unexpected child), keeps the tool's
process group (it dies with it) and holds none of the tool's stdio (the tool's output ends when the tool
does). It is only a pipe: every decision is the proxy's, outside the sandbox. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys

EXIT_CANNOT_START = 126
PIPE_BYTES = 64 * 1024
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(PIPE_BYTES):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def bridge(path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(path)
    except OSError:
        writer.close()
        return
    try:
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    finally:
        up_writer.close()
        writer.close()


async def serve(listener: socket.socket, path: str) -> None:
    server = await asyncio.start_server(lambda r, w: bridge(path, r, w), sock=listener)
    async with server:
        await server.serve_forever()


def detach_and_serve(listener: socket.socket, path: str) -> None:
    """In the forked child: fork again (the grandchild serves), so the tool has no stray child."""
    if os.fork() != 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    with contextlib.suppress(BaseException):
        asyncio.run(serve(listener, path))
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
        child = os.fork()
        if child == 0:
            detach_and_serve(listener, path)
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
