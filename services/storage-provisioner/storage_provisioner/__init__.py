"""storage-provisioner."""
