"""``python -m governance sbom|sign|keygen|receipt|lineage|card|verify|release``."""

from governance.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
