"""A stack's state folded from its events, and its uploads in the object store."""
