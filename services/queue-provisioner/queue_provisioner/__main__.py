"""``python -m queue_provisioner``."""

from queue_provisioner.main import main

raise SystemExit(main())
