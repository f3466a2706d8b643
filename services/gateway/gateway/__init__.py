"""gateway: the HTTP API. It never holds backend credentials; workers do the provisioning."""
