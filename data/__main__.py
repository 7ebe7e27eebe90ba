"""``python -m data build|verify``: the same commands as ``lmplanes data``."""

from data.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
