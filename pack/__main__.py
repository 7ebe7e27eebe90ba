"""``python -m pack``: the ``lmplanes`` command line."""

from pack.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
