"""Webhook receivers: their Redis driver (the gateway is their worker) and ``/webhook`` routes."""
