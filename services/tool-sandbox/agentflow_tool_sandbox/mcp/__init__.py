"""MCP in the tool-sandbox: registered MCP servers, their imported tools, calls to them, and the bridge that
answers the gateway's MCP endpoint. See docs/mcp.md."""
