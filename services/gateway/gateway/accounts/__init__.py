"""Accounts and who the caller is: the account read model, auth, and the ``/auth`` routes."""
