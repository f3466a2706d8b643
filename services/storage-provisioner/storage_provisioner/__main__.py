"""``python -m storage_provisioner``."""

from storage_provisioner.main import main

raise SystemExit(main())
