"""reaper: expiry and orphan sweeps.

It holds no credentials and no database connection: it asks each kind's worker what is due and
sends the commands.
"""
