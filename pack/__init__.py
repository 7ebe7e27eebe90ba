"""The ``lmplanes`` command line: config templates and validation, environment report.

``pack`` is the composition root of lmplanes. Its subcommands delegate to the planes; a subcommand arrives
with the plane that does its work (``train`` with ``train``, ``generate`` with ``serve``, ...), never as a stub.

    lmplanes config new llama-tiny -o my.yaml --set n_layers=4
    lmplanes config validate my.yaml
    lmplanes config show my.yaml --format json
    lmplanes env

``python -m pack`` is the same program.
"""

from pack.cli import build_parser, main

__all__ = ["build_parser", "main"]
