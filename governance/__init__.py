"""lmplanes governance: release artifacts for checkpoint and export directories, and the release gate.

Works on files only: imports ``specs`` from the repository and never torch or model code, so it runs on any
machine that holds a checkpoint (``python -m governance ...``). See README.md.
"""

from governance.card import build_card, write_card
from governance.checksums import check_checksums, write_checksums
from governance.cyclonedx_sbom import build_cyclonedx, cyclonedx_errors, write_cyclonedx
from governance.environment import Package, installed_packages
from governance.files import ARTIFACTS_DIR, GovernanceError
from governance.gate import verify_release
from governance.lineage import build_lineage, write_lineage
from governance.openssf import model_signature_problems, sign_model
from governance.receipt import make_receipt, run_with_receipt, write_receipt
from governance.release import release
from governance.signing import keygen, load_private_key, public_key_path, sign_file, signature_problems
from governance.spdx_sbom import build_spdx, spdx_errors, write_spdx

__all__ = [
    "ARTIFACTS_DIR",
    "GovernanceError",
    "Package",
    "build_card",
    "build_cyclonedx",
    "build_lineage",
    "build_spdx",
    "check_checksums",
    "cyclonedx_errors",
    "installed_packages",
    "keygen",
    "load_private_key",
    "make_receipt",
    "model_signature_problems",
    "public_key_path",
    "release",
    "run_with_receipt",
    "sign_file",
    "sign_model",
    "signature_problems",
    "spdx_errors",
    "verify_release",
    "write_card",
    "write_checksums",
    "write_cyclonedx",
    "write_lineage",
    "write_receipt",
    "write_spdx",
]
