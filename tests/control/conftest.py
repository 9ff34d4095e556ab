"""The control tests reuse the operator tests' kmock harness (tests/operator/operator_harness.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
