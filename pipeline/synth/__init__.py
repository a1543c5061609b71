"""Phantom generator: synthetic Dixon calf and lumbar T2 studies with exact ground truth.

``write_case(case, seed, out)`` writes a whole study folder; ``generate_calf`` / ``generate_lumbar`` return the
volumes, label maps and truth in memory (training data).
"""

from pipeline.synth.cases import CASE_NAMES, make_case
from pipeline.synth.write import write_case

CASES = CASE_NAMES

__all__ = ["CASES", "CASE_NAMES", "make_case", "write_case"]
