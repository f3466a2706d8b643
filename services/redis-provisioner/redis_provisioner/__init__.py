"""redis-provisioner."""
