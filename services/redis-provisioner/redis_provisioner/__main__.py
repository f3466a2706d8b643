"""``python -m redis_provisioner``."""

from redis_provisioner.main import main

raise SystemExit(main())
