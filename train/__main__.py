"""``python -m train``: the same as ``lmplanes train``, with the model store installed under the
``lmplanes.model_stores`` entry point."""

import argparse
import sys

from specs.protocols import installed_store
from train.cli import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m train", description="Train a language model, or resume a run.")
    add_arguments(parser)
    try:
        sys.exit(run(parser.parse_args(), installed_store()))
    except ValueError as exc:  # a mistake on the command line or in the environment: one line, no traceback
        print(f"python -m train: error: {exc}", file=sys.stderr)
        sys.exit(2)
