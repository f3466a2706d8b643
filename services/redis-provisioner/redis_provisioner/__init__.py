"""redis-provisioner: tenant ACL users and key prefixes on the customer Redis."""
