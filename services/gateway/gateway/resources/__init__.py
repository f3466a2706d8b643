"""Provisioning (``POST /<kind>/new``), resource management (``/resources``), plans and health."""
