"""The three-step verdict of legmri's quality control (``pass``, ``review``, ``fail``) with its reasons, shared by
the calf (:mod:`pipeline.calf.qc`) and spine (:mod:`pipeline.spine.qc`) checks."""

from __future__ import annotations

from dataclasses import dataclass, field

PASS, REVIEW, FAIL = "pass", "review", "fail"
_RANK = {PASS: 0, REVIEW: 1, FAIL: 2}


def worst(*statuses: str) -> str:
    """The most severe of ``statuses`` (fail > review > pass).

    >>> worst("pass", "review"), worst(), worst("review", "fail", "pass")
    ('review', 'pass', 'fail')
    """
    return max(statuses, key=_RANK.__getitem__, default=PASS)


@dataclass
class Verdict:
    """A status and the reasons that are not a pass; :meth:`add` keeps the worst status.

    >>> v = Verdict(); v.add(PASS, "fine"); v.add(REVIEW, "odd"); (v.status, v.reasons)
    ('review', ['odd'])
    """

    status: str = PASS
    reasons: list[str] = field(default_factory=list)

    def add(self, status: str, reason: str) -> None:
        self.status = worst(self.status, status)
        if status != PASS:
            self.reasons.append(reason)
