"""Load preference data from any supported source into canonical records (:mod:`alphapo.data.schema`).

``load_preferences(source)`` is what the trainer calls. It reads every row (streaming, see
:mod:`alphapo.data.readers`), converts it with :func:`alphapo.data.schema.normalize_row`, and either
returns all records (strict mode, the default: any bad row raises :class:`DataValidationError` listing
every issue, so nothing downstream is written) or drops the bad rows and reports how many per reason
(``skip_invalid=True``; the report is attached as ``records.report``).

``iter_preferences`` is the streaming form used by ``alphapo data validate`` / ``stats``: it yields records
one at a time and fills a :class:`ValidationReport`, so memory stays flat on files of any size (8 bytes
per row are kept, a hash of its id).

A source with no rows at all (an empty file, blank lines only, an empty split) is a ``UserError``. Valid
rows that are still suspicious are counted in ``report.warnings`` (never dropped): pairs whose scores
say the rejected response is better, and ids that repeat.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from alphapo.data.readers import detect_format, read_rows
from alphapo.data.schema import normalize_row, record_kind, resolve_columns
from alphapo.data.validation import DataValidationError, Issue, ValidationReport
from alphapo.errors import UserError


class PreferenceRecords(list):
    """A plain list of canonical records, plus ``.report`` (the :class:`ValidationReport` of the load)."""

    report: ValidationReport


def iter_preferences(source: str | Path, *, columns: Mapping[str, str] | None = None, split: str = "train",
                     report: ValidationReport | None = None, progress: bool = False) -> Iterator[dict]:
    """Yield the valid canonical records of ``source``; every issue goes into ``report`` (never raised).

    This is the lenient streaming core; strictness is the caller's decision (see :func:`load_preferences`).
    """
    cols = resolve_columns(columns)
    fmt = detect_format(source)
    name = str(source)
    report = report if report is not None else ValidationReport(name)
    line_based = fmt == "jsonl"
    rows = read_rows(source, split=split, fmt=fmt)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc=f"reading {Path(name).name}", unit=" rows", disable=None, mininterval=1.0)
    checks = _RecordChecks()
    try:
        for row, value in rows:
            report.rows += 1
            if bar is not None:
                bar.update(1)
            if isinstance(value, Issue):
                report.add_row_issues([value])
                continue
            record, issues = normalize_row(value, file=name, row=row, line_based=line_based, columns=cols)
            if issues:
                report.add_row_issues(issues)
                continue
            report.valid += 1
            report.kinds[record_kind(record)] += 1
            checks.add(record)
            yield record
    finally:
        if bar is not None:
            bar.close()
    if report.rows == 0:
        what = "an empty file or split, or only blank lines" if fmt in ("json", "disk", "hub") else \
            "an empty file, or only blank lines"
        raise UserError(f"{name}: no rows ({what}); there is nothing to validate or train on")
    report.warnings.extend(checks.warnings())


class _RecordChecks:
    """Valid rows that are still suspicious: inverted scores and duplicate ids, counted (memory: 8 bytes/row)."""

    def __init__(self):
        self.inverted = 0
        self.inverted_ids: list[str] = []
        self.id_hashes = array("Q")

    def add(self, record: Mapping) -> None:
        c, r = record.get("chosen_score"), record.get("rejected_score")
        if c is not None and r is not None and c < r:
            self.inverted += 1
            if len(self.inverted_ids) < 3:
                self.inverted_ids.append(record["id"])
        digest = hashlib.blake2b(record["id"].encode("utf-8", "surrogatepass"), digest_size=8).digest()
        self.id_hashes.append(int.from_bytes(digest, "little"))

    def warnings(self) -> list[str]:
        out = []
        if self.inverted:
            out.append(f"{self.inverted} pair(s) score the rejected response above the chosen one (e.g. ids "
                       f"{self.inverted_ids}); training prefers 'chosen' whatever the scores say: check the "
                       "columns (score_chosen / score_rejected) or swap the pairs")
        ids = np.frombuffer(self.id_hashes, dtype=np.uint64) if self.id_hashes else np.zeros(0, np.uint64)
        ids.sort()  # in place, in the array's own buffer: no second copy
        repeats = int(np.count_nonzero(ids[1:] == ids[:-1]))
        if repeats:
            out.append(f"{repeats} row(s) repeat an id of an earlier row; ids name records in truncation "
                       "reports, caches and relabeled copies, so make them unique")
        return out


def load_preferences(source: str | Path, *, columns: Mapping[str, str] | None = None, split: str = "train",
                     skip_invalid: bool = False) -> PreferenceRecords:
    """Read ``source`` into a list of canonical records (see :mod:`alphapo.data.schema`).

    Args:
        source: a ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` / ``.tsv`` file, a ``save_to_disk``
            folder, or a hub dataset name (``owner/name``).
        columns: ``{canonical_field: source_column}`` overrides, e.g. ``{"prompt": "question"}``.
        split: the split of a ``DatasetDict`` / hub dataset / JSON object with one list per split.
        skip_invalid: drop bad rows (counted per reason in ``.report``) instead of raising.

    Raises:
        DataValidationError: strict mode and at least one bad row (the message lists every issue).
    """
    report = ValidationReport(str(source))
    records = PreferenceRecords(iter_preferences(source, columns=columns, split=split, report=report))
    records.report = report
    if report.invalid_rows and not skip_invalid:
        raise DataValidationError(report)
    return records


def validate(source: str | Path, *, columns: Mapping[str, str] | None = None, split: str = "train",
             progress: bool = False) -> ValidationReport:
    """Check every row of ``source`` without keeping the records (flat memory); returns the report."""
    report = ValidationReport(str(source))
    for _ in iter_preferences(source, columns=columns, split=split, report=report, progress=progress):
        pass
    return report
