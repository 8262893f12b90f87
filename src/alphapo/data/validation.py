"""Validation issues: where a row is wrong (file, row or JSONL line, field) and what is wrong with it.

Every check in :mod:`alphapo.data.schema` and :mod:`alphapo.data.readers` reports an :class:`Issue` with a
stable ``reason`` code (the keys of :data:`REASONS`). Loading is strict by default: all issues of a file are
collected and raised together as one :class:`DataValidationError` (so a user fixes the file in one pass,
and nothing downstream is written). With ``skip_invalid=True`` the bad rows are dropped and counted per
reason in a :class:`ValidationReport`, which the CLI prints; rows are never dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from alphapo.errors import UserError

#: reason code -> what a person reads. Stable codes: tests and ``--skip-invalid`` counts use them.
REASONS: dict[str, str] = {
    "malformed_json": "malformed JSON",
    "non_utf8": "non-UTF-8 bytes",
    "not_an_object": "row is not an object",
    "missing_field": "missing field",
    "empty_field": "empty field",
    "wrong_type": "wrong type",
    "bad_message": "malformed chat message",
    "no_prompt": "no prompt",
    "non_finite_score": "non-finite score",
    "score_length": "score list of the wrong length",
    "identical_pair": "chosen identical to rejected",
    "no_assistant_end": "conversation does not end with an assistant turn",
    "tied_scores": "all responses scored equally",
    "unknown_column": "misspelled column",
}

#: How many issue lines an exception message shows before summarising the rest as counts.
MAX_LISTED = 50


@dataclass(frozen=True)
class Issue:
    """One thing wrong with one row. ``row`` is the 1-based line number for JSONL, else the 1-based row."""

    file: str
    row: int | None
    field: str | None
    reason: str
    detail: str
    line_based: bool = False

    def __post_init__(self):
        if self.reason not in REASONS:  # a typo in our own code must not produce an unlisted reason
            raise ValueError(f"unknown reason {self.reason!r}")

    @property
    def where(self) -> str:
        loc = self.file
        if self.row is not None:
            loc += f" {'line' if self.line_based else 'row'} {self.row}"
        if self.field is not None:
            loc += f", field '{self.field}'"
        return loc

    def __str__(self) -> str:
        return f"{self.where}: {REASONS[self.reason]}: {self.detail}"


#: Issues kept in memory per report; beyond this only counts grow (keeps memory flat on huge bad files).
MAX_KEPT = 10_000


@dataclass
class ValidationReport:
    """Counts of a pass over a source: rows read, rows kept, and the issues found.

    Every issue is counted; the first ``max_kept`` are kept for the report (all of them on any file a
    person would read line by line), so memory stays bounded on a huge file where every row is bad.
    """

    source: str
    rows: int = 0
    valid: int = 0
    issues: list[Issue] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)  # schema kind -> rows ("pair", "multi")
    reason_rows: Counter = field(default_factory=Counter)  # reason -> bad rows with that reason
    not_kept: int = 0
    max_kept: int = MAX_KEPT
    warnings: list[str] = field(default_factory=list)  # valid rows that are suspicious, with counts

    @property
    def invalid_rows(self) -> int:
        return self.rows - self.valid

    def add_row_issues(self, issues: list[Issue]) -> None:
        """Record the issues of one bad row."""
        self.reason_rows.update({issue.reason for issue in issues})
        room = max(self.max_kept - len(self.issues), 0)
        self.issues.extend(issues[:room])
        self.not_kept += len(issues) - min(room, len(issues))

    def counts(self) -> Counter:
        """Bad rows per reason (a row with several issues counts under each of its reasons once)."""
        return Counter(self.reason_rows)

    def skipped_line(self) -> str | None:
        """``"skipped N invalid row(s) of M: <count> <reason>, ..."`` when rows were dropped, else None."""
        if not self.invalid_rows:
            return None
        counts = ", ".join(f"{n} {REASONS[r]}" for r, n in self.counts().most_common())
        return f"skipped {self.invalid_rows} invalid row(s) of {self.rows}: {counts}"

    def notices(self) -> list[str]:
        """What a caller that keeps going must print: the skipped-rows line and every data warning."""
        skipped = self.skipped_line()
        return ([skipped] if skipped else []) + [f"warning: {w}" for w in self.warnings]

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items())) or "no records"
        line = f"{self.source}: {self.rows} rows, {self.valid} valid ({kinds})"
        if self.invalid_rows:
            counts = ", ".join(f"{n} {REASONS[r]}" for r, n in self.counts().most_common())
            line += f"; {self.invalid_rows} invalid ({counts})"
        return line

    def full_report(self, limit: int | None = None) -> str:
        issues = self.issues if limit is None else self.issues[:limit]
        lines = [str(i) for i in issues]
        more = len(self.issues) - len(issues) + self.not_kept
        if more:
            lines.append(f"... and {more} more issues (counts below)")
        lines.append(self.summary())
        return "\n".join(lines)


class DataValidationError(UserError):
    """Raised in strict mode when a source has invalid rows; ``.report`` holds every issue."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(
            f"{report.invalid_rows} invalid row(s) in {report.source} (nothing was written; fix them, or pass "
            f"--skip-invalid / skip_invalid=True to drop them):\n{report.full_report(MAX_LISTED)}"
        )
