"""queue-provisioner."""
