"""``python -m pg_provisioner``."""

from pg_provisioner.main import main

raise SystemExit(main())
