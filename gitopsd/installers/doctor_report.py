"""What `gitopsd doctor` reports: a finding (ok, or what is wrong and its fix), and checks that never end in a traceback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ok, or what is wrong and the command that fixes it."""

    ok: bool
    what: str
    fix: str | None = None

    def text(self) -> str:
        if self.ok:
            return f"ok       {self.what}"
        return f"PROBLEM  {self.what}" + (f"\n         fix: {self.fix}" if self.fix else "")


def checked(what: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """A check that fails in an unforeseen way is a finding too, never a traceback."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 (doctor must report, not crash)
        return [Finding(False, f"{what}: could not be checked ({type(exc).__name__}: {exc})")]
