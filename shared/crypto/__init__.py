"""Sealing secrets at rest, minting and hashing resource tokens, and NATS nkeys and JWTs."""
