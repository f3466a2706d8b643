"""Stacks: deploying uploaded apps (``/stacks``, ``/deploy``) and serving them (``/apps``)."""
