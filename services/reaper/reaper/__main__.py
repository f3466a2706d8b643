"""``python -m reaper``."""

from reaper.main import main

raise SystemExit(main())
