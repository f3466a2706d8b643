"""``python -m mongo_provisioner``."""

from mongo_provisioner.main import main

raise SystemExit(main())
