"""Everything that crosses a process boundary: commands, replies, events, error codes, endpoints."""
