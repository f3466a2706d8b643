"""mongo-provisioner."""
