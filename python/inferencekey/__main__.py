"""``python -m inferencekey``: the same command as the ``inferencekey`` console script."""

from __future__ import annotations

from inferencekey.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
