"""pg-provisioner: tenant roles and databases on the customer Postgres."""
