"""Load preference data from any supported source into canonical records (the data contract of ``alphapo.data.schema``).

``load_preferences(source)`` is what the trainer calls. It reads every row (streaming, see
:mod:`alphapo.data.readers`), converts it with :func:`alphapo.data.schema.normalize_row`, and either
returns all records (strict mode, the default: any bad row raises :class:`DataValidationError` listing
every issue, so nothing downstream is written) or drops the bad rows and reports how many per reason
(``skip_invalid=True``; the report is attached as ``records.report``).

``iter_preferences`` is the streaming form used by ``alphapo data validate`` / ``stats``: it yields records
one at a time and fills a :class:`ValidationReport`, so memory stays flat on files of any size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from alphapo.data.readers import detect_format, read_rows
from alphapo.data.schema import normalize_row, record_kind, resolve_columns
from alphapo.data.validation import DataValidationError, Issue, ValidationReport


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
            yield record
    finally:
        if bar is not None:
            bar.close()


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
