"""``python -m stack_deployer``."""

from stack_deployer.main import main

raise SystemExit(main())
