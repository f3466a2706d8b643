"""``spinup``: the command line for the Spinup HTTP API (writes ``.env``, like ``npx get-db``)."""
