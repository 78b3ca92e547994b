"""Sanity: a plain registration, run first and last, so that a crash mid-run shows."""

from __future__ import annotations

from conformance.case import MUST, CaseContext, case
from conformance.flows import register

REQUIREMENT = (
    "Otherwise the server MUST create a fresh client id from a cryptographically secure random source "
    "(UUID version 4), store the client (name, id, LastSeen; no public key yet) durably, and answer 2100 "
    "REGISTERED carrying the id."
)


@case("0-sanity-first", level=MUST, requirement=REQUIREMENT)
def test_sanity_first(case_context: CaseContext) -> None:
    """A fresh client registers (before every other case)."""
    register(case_context.connect())


@case("0-sanity-last", level=MUST, requirement=REQUIREMENT)
def test_sanity_last(case_context: CaseContext) -> None:
    """A fresh client still registers (after every other case): the server survived the run."""
    register(case_context.connect())
