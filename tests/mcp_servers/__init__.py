"""MCP servers written with the official `mcp` SDK, run as real processes by the tests."""
