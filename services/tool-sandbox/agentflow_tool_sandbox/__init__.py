"""tool-sandbox: the tool registry and sandboxed tool execution (ToolService)."""
