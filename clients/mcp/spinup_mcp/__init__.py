"""An MCP server that lets coding agents use the Spinup HTTP API."""
