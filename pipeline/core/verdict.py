"""The three-step verdict of legmri's quality control (``pass``, ``review``, ``fail``) with its reasons, shared by
the calf (:mod:`pipeline.calf.qc`) and spine (:mod:`pipeline.spine.qc`) checks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PASS, REVIEW, FAIL = "pass", "review", "fail"
#: what separates the reasons of a verdict in one ``summary.json`` value (the report lists them one per line by it)
REASON_SEPARATOR = "; "
_RANK = {PASS: 0, REVIEW: 1, FAIL: 2}


def worst(*statuses: str) -> str:
    """The most severe of ``statuses`` (fail > review > pass).

    >>> worst("pass", "review"), worst(), worst("review", "fail", "pass")
    ('review', 'pass', 'fail')
    """
    return max(statuses, key=_RANK.__getitem__, default=PASS)


def group_verdict(statuses: Sequence[str | None], study: str | None = None) -> str | None:
    """The verdict that decides whether a value is used, from the verdicts of the structures it rests on (a muscle
    group's members, both legs of an asymmetry) and the study's: ``fail`` when the study failed (the rules then use
    none of its values); else the worst of them when one is ``fail`` or ``review``; ``pass`` when every one passed;
    None when one has no verdict and none is worse than pass.

    >>> group_verdict(["pass", "fail", None]), group_verdict(["pass", "review"]), group_verdict(["pass", "pass"])
    ('fail', 'review', 'pass')
    >>> group_verdict(["pass", None]) is None, group_verdict(["pass"], study="fail")
    (True, 'fail')
    """
    if study == FAIL:
        return FAIL
    known = [s for s in statuses if s is not None]
    if any(s != PASS for s in known):
        return worst(*known)
    return PASS if statuses and len(known) == len(statuses) else None


def level_verdict(own: str | None, study: str | None) -> str | None:
    """The verdict of a lumbar level that decides whether its values are used: its own, ``fail`` when the study
    failed; None for a level without a verdict of its own (named, but not found in this study).

    >>> level_verdict("pass", "fail"), level_verdict("review", "pass"), level_verdict(None, "fail") is None
    ('fail', 'review', True)
    """
    return None if own is None else group_verdict([own], study=study)


def join_reasons(reasons: Iterable[str]) -> str:
    """Reasons as one ``summary.json`` value, separated by :data:`REASON_SEPARATOR`; a separator inside a reason
    becomes ", " so that the reason stays one item when the value is split again.

    >>> join_reasons(["disc_4: not labelled; placed in the gap", "disc_5: no sac"])
    'disc_4: not labelled, placed in the gap; disc_5: no sac'
    """
    return REASON_SEPARATOR.join(r.replace(REASON_SEPARATOR, ", ") for r in reasons)


@dataclass
class Verdict:
    """A status and the reasons that are not a pass; :meth:`add` keeps the worst status and, for a concern that asks
    for review, which kind of check raised it (``kind``).

    >>> v = Verdict(); v.add(PASS, "fine"); v.add(REVIEW, "odd", "shape"); (v.status, v.reasons, v.review_kinds)
    ('review', ['odd'], {'shape'})
    """

    status: str = PASS
    reasons: list[str] = field(default_factory=list)
    review_kinds: set[str] = field(default_factory=set)

    def add(self, status: str, reason: str, kind: str = "") -> None:
        self.status = worst(self.status, status)
        if status != PASS:
            self.reasons.append(reason)
        if status == REVIEW:
            self.review_kinds.add(kind or reason)

    def converge(self, n_kinds: int) -> None:
        """Fail a verdict under review when at least ``n_kinds`` independent kinds of check each raised a concern:
        one concern may be the subject's anatomy or a borderline value, several that agree say the result is wrong.

        >>> v = Verdict(); v.add(REVIEW, "a", "entropy"); v.add(REVIEW, "b", "flip"); v.converge(2); v.status
        'fail'
        """
        if self.status == REVIEW and len(self.review_kinds) >= n_kinds:
            self.add(FAIL, f"{len(self.review_kinds)} independent checks ask for review "
                           f"({', '.join(sorted(self.review_kinds))})")
