"""reaper: expiry and orphan sweeps. It holds no credentials; it only sends commands."""
