"""Sealing secrets at rest and minting and hashing resource tokens."""
