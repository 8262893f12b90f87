"""Raw row readers: turn a file, a ``save_to_disk`` folder or a hub name into a stream of plain dicts.

Each reader is a generator of ``(row_number, value)`` pairs where ``value`` is the parsed row (normally a
dict) or an :class:`~alphapo.data.validation.Issue` when the row cannot even be parsed (malformed JSON,
non-UTF-8 bytes). Readers never hold a whole file in memory, except JSON (a single document has to be
parsed at once; use JSONL for large data):

- JSONL (``.jsonl``, ``.ndjson``): read in binary, one line at a time; row numbers are 1-based line
  numbers (blank lines are skipped but counted, so the number matches an editor).
- JSON (``.json``): a list of objects, or an object holding lists per split (``{"train": [...]}``; a
  missing split is an error) or one list under another key (``{"data": [...]}``, any split).
  A ``.json`` file that is really JSON Lines is read as JSONL.
- Parquet (``.parquet``): record batches of 1024 rows via pyarrow.
- CSV / TSV (``.csv``, ``.tsv``): the header names the columns; cells holding JSON lists (message lists,
  score lists) are parsed by the schema layer. Row numbers are 1-based data rows (header excluded).
- A folder written by ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict``: ``split`` picks one).
- Anything else that looks like ``owner/name`` and is not a local path: ``datasets.load_dataset(name,
  split=split)`` from the hub (real code, but tests only exercise local paths; nothing is downloaded in
  tests, which run with ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alphapo.data.validation import Issue
from alphapo.errors import UserError

RawRow = tuple[int, Any]  # (1-based row or line number, parsed row or Issue)

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FORMATS = ("jsonl", "json", "parquet", "csv", "tsv", "disk", "hub")
_SPLIT_NAMES = {"train", "test", "validation", "valid", "val", "dev", "eval", "evaluation", "heldout"}


def detect_format(source: str | Path) -> str:
    """The reader for ``source``: a file suffix, a ``save_to_disk`` folder, or a hub name."""
    path = Path(source)
    if path.is_dir():
        if any((path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "disk"
        raise UserError(f"{source} is a folder but not a datasets save_to_disk folder (no state.json or "
                        f"dataset_dict.json); pass a data file or a folder written by Dataset.save_to_disk")
    if path.is_file():
        suffix = path.suffix.lower()
        fmt = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
               ".csv": "csv", ".tsv": "tsv"}.get(suffix)
        if fmt is None:
            raise UserError(f"{source}: unknown file type {suffix!r}; use .jsonl, .json, .parquet, .csv or .tsv")
        return fmt
    if isinstance(source, str) and _HUB_NAME.match(source) and not source.startswith((".", "/")):
        return "hub"
    raise UserError(f"{source}: no such file or folder (and not a hub dataset name like 'owner/name')")


def read_rows(source: str | Path, *, split: str = "train", fmt: str | None = None) -> Iterator[RawRow]:
    """Stream ``(row_number, row_or_issue)`` from ``source`` (see the module docstring for formats)."""
    fmt = fmt or detect_format(source)
    name = str(source)
    if fmt == "jsonl":
        return _read_jsonl(Path(source), name)
    if fmt == "json":
        return _read_json(Path(source), name, split)
    if fmt == "parquet":
        return _read_parquet(Path(source))
    if fmt in ("csv", "tsv"):
        return _read_csv(Path(source), name, delimiter="\t" if fmt == "tsv" else ",")
    if fmt == "disk":
        return _read_disk(Path(source), name, split)
    if fmt == "hub":
        return _read_hub(name, split)
    raise UserError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")


def _decode(raw: bytes, name: str, row: int, line_based: bool) -> str | Issue:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Issue(name, row, None, "non_utf8", f"byte {raw[err.start:err.start + 1]!r} at offset "
                     f"{err.start} is not valid UTF-8; re-encode the file as UTF-8", line_based)


def _read_jsonl(path: Path, name: str) -> Iterator[RawRow]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark is legal at the start of a file
            if not raw.strip():
                continue
            text = _decode(raw, name, lineno, True)
            if isinstance(text, Issue):
                yield lineno, text
                continue
            try:
                yield lineno, json.loads(text.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                yield lineno, Issue(name, lineno, None, "malformed_json",
                                    f"{err.msg} at column {err.colno}", True)
            except RecursionError:
                yield lineno, Issue(name, lineno, None, "malformed_json", "nested too deeply", True)


def _read_json(path: Path, name: str, split: str) -> Iterator[RawRow]:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark is legal at the start of a file (as for JSONL and CSV)
    text = _decode(data, name, None, False)
    if isinstance(text, Issue):
        yield 0, text
        return
    try:
        doc = json.loads(text)
    except RecursionError:
        yield 0, Issue(name, None, None, "malformed_json", "nested too deeply to parse")
        return
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several documents: it is JSON Lines with a .json name
            yield from _read_jsonl(path, name)
            return
        yield 0, Issue(name, None, None, "malformed_json", f"{err.msg} at line {err.lineno} column {err.colno}")
        return
    if isinstance(doc, dict):
        lists = {k: v for k, v in doc.items() if isinstance(v, list)}
        only = next(iter(lists)) if len(lists) == 1 else None
        if split in lists:
            doc = lists[split]
        elif only is not None and only.lower() in _SPLIT_NAMES:
            # {"train": [...]} asked for split "test": reading the train rows instead would be a silent swap
            raise UserError(f"{name}: no split {split!r}; the file holds only split {only!r} "
                            f"(pass --split {only} / split={only!r})")
        elif only is not None:  # one list under a non-split key, e.g. {"data": [...]}
            doc = lists[only]
        else:
            raise UserError(f"{name}: a JSON object must hold the rows as a list under the split name "
                            f"{split!r} (found keys {sorted(doc)}); or make the file a JSON list of rows")
    if not isinstance(doc, list):
        raise UserError(f"{name}: expected a JSON list of rows, got {type(doc).__name__}")
    for i, row in enumerate(doc, start=1):
        yield i, row


def _read_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError subclasses
        raise UserError(f"{path}: not a readable Parquet file ({err})") from err
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def _read_csv(path: Path, name: str, delimiter: str) -> Iterator[RawRow]:
    # surrogateescape keeps bad bytes as lone surrogates so we can report the row instead of crashing.
    with open(path, "rb") as fb:
        text = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
        csv.field_size_limit(2**31 - 1)  # long responses are normal; the default limit is 128 KiB per cell
        reader = csv.DictReader(text, delimiter=delimiter)
        for i, record in enumerate(_csv_rows(reader, name), start=1):
            bad = [k for k, v in record.items() if _has_surrogate(k) or _has_surrogate(v)]
            if bad:
                yield i, Issue(name, i, str(bad[0]).encode("utf-8", "replace").decode(), "non_utf8",
                               "cell holds bytes that are not valid UTF-8; re-encode the file as UTF-8")
                continue
            if None in record:  # more cells than header columns
                yield i, Issue(name, i, None, "wrong_type",
                               f"row has {len(record) - 1 + len(record[None])} cells but the header names "
                               f"{len(record) - 1} columns")
                continue
            yield i, {"__csv__": True, **record}


def _csv_rows(reader, name: str):
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as err:  # the file structure itself is broken: no later row can be trusted
            raise UserError(f"{name} line {reader.line_num}: unreadable CSV ({err})") from err


def _has_surrogate(value) -> bool:
    if isinstance(value, str):
        return any("\udc80" <= ch <= "\udcff" for ch in value)
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _pick_split(obj, name: str, split: str):
    from datasets import DatasetDict, IterableDatasetDict

    if isinstance(obj, (DatasetDict, IterableDatasetDict)):
        if split not in obj:
            raise UserError(f"{name}: no split {split!r}; available: {', '.join(obj)}")
        return obj[split]
    return obj


def _read_disk(path: Path, name: str, split: str) -> Iterator[RawRow]:
    from datasets import load_from_disk

    ds = _pick_split(load_from_disk(str(path)), name, split)
    for i, record in enumerate(ds, start=1):  # arrow-backed and memory-mapped: rows materialise one by one
        yield i, record


def _read_hub(name: str, split: str) -> Iterator[RawRow]:
    from datasets import load_dataset

    try:
        ds = load_dataset(name, split=split)
    except Exception as err:  # noqa: BLE001 - datasets raises many types for a missing/offline dataset
        raise UserError(f"could not load hub dataset {name!r} split {split!r}: {err}") from err
    for i, record in enumerate(ds, start=1):
        yield i, record
