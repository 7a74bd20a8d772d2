"""The one way a reconciliation step says it cannot go on now: a missing or forbidden reference, a
child's name taken by an object this operator does not manage. The outcome is the resource's status."""

from __future__ import annotations

from .conditions import Outcome


class Blocked(Exception):
    """Reconciliation cannot go on now; the outcome says why (a missing or forbidden reference...)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome
