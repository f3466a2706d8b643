"""Claim: moving anonymous resources into an account (``/claim``)."""
