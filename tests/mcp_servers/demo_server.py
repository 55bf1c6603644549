"""A small MCP server built with the SDK's FastMCP, for the tests: `python demo_server.py stdio` or
`python demo_server.py http PORT`.

Tools: `add` (structured result), `echo`, `shout` (reports progress), `fail` (a tool error); `grow_tools`
registers `late_tool` and sends `notifications/tools/list_changed`.
"""

from __future__ import annotations

import sys

from mcp.server.fastmcp import Context, FastMCP


def build(name: str, port: int = 0) -> FastMCP:
    server = FastMCP(name, host="127.0.0.1", port=port or 8000)

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    @server.tool(description="Echo a text back, tagged with the server name.")
    def echo(text: str) -> str:
        return f"{name}: {text}"

    @server.tool(description="Upper-case a text, reporting progress on the way.")
    async def shout(text: str, ctx: Context) -> str:  # type: ignore[type-arg]
        await ctx.report_progress(0.5, 1.0, "half way")
        return text.upper()

    @server.tool(description="Always fails.")
    def fail(reason: str) -> str:
        raise ValueError(f"failed on purpose: {reason}")

    def late_tool(x: int) -> int:
        """Added at run time by grow_tools."""
        return x * 10

    @server.tool(description="Register late_tool and announce that the tool list changed.")
    async def grow_tools(ctx: Context) -> str:  # type: ignore[type-arg]
        if "late_tool" not in {t.name for t in await server.list_tools()}:
            server.add_tool(late_tool, description="Added at run time by grow_tools.")
        await ctx.session.send_tool_list_changed()
        return "grown"

    return server


def main(argv: list[str]) -> None:
    transport = argv[0] if argv else "stdio"
    if transport == "http":
        build(argv[2] if len(argv) > 2 else "http-demo", int(argv[1])).run("streamable-http")
    else:
        build(argv[1] if len(argv) > 1 else "stdio-demo").run("stdio")


if __name__ == "__main__":
    main(sys.argv[1:])
