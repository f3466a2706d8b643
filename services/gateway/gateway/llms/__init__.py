"""``GET /llms.txt``: the guide for coding agents."""
