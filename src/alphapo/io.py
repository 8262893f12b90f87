"""Atomic file output: the one place where alphapo writes files that a reader may see.

Every writer here puts its output in a temporary file (or folder) next to the destination and renames it
into place (``os.replace`` is atomic within one file system, which is why the temporary sits in the
destination's folder). A crash, an exception or a kill at any instant leaves the previous file (or none),
never a partial one.

One policy for every writer:

- **Temporary names** are recognisable: ``.NAME.tmp-HOST-PID-XXXXXXXX``, where HOST and PID are the
  writing machine and process and XXXXXXXX eight random characters.
  They do not end in NAME's suffix, so a glob such as ``*.jsonl`` never picks up a half-written file;
  writers that choose a format from the extension must be told the format (``savefig(format="png")``).
- **fsync**: the temporary file (every file of a temporary folder) is fsync'ed before the rename and the
  folder after it, so a power loss does not leave a renamed but empty file.
- **File mode** follows the umask, as a plain ``open()`` would: ``0644`` files and ``0755`` folders under
  the usual umask ``022`` (``mkstemp`` alone would make them ``0600`` / ``0700``).
- **Cleanup**: a writer that fails removes its temporary. A writer that is killed cannot, so every write
  first calls ``clean_stale_temps`` on the destination folder, which removes this machine's temporaries
  whose PID is no longer running (it leaves live writers' temporaries, other machines' temporaries on a
  shared file system, and names that merely look similar alone), finishes an ``atomic_group`` commit that
  a kill interrupted, and restores a folder that ``atomic_dir`` had moved aside.
- **Strict JSON**: NaN and infinity are refused (``ValueError``) rather than written as the ``NaN`` token
  that other JSON readers reject; convert them to ``null`` where they mean "no value".

The writers: ``atomic_path`` (a context yielding a temporary path, for any writer that takes a path),
``write_text_atomic``, ``write_json_atomic``, ``write_jsonl_atomic``, ``write_png_atomic``, ``atomic_dir``
(a whole folder, e.g. a saved model) and ``atomic_group`` (several files of one folder committed together:
all of them or none, after recovery).

Deviations: a temporary left by a process killed on *another* machine of a shared file system is never
removed automatically (its PID cannot be checked from here); it is harmless (hidden, and never matched by
a ``*.jsonl`` glob) and can be deleted by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_dir",
    "atomic_group",
    "write_text_atomic",
    "write_json_atomic",
    "write_jsonl_atomic",
    "write_png_atomic",
    "json_text",
    "dump_jsonl",
    "clean_stale_temps",
    "make_temp_dir",
    "temp_prefix",
    "fsync_file",
    "fsync_dir",
]

# ".NAME.KIND-HOST-PID-XXXXXXXX": a temporary (tmp), a folder moved aside (old) or a group-commit journal
# (commit); XXXXXXXX is what mkstemp / mkdtemp / token_hex(4) append
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old|commit)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[a-z0-9_]{8}$")


def _host() -> str:
    """This machine's name as it appears in temporary names (letters and digits only)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"


def temp_prefix(name: str, kind: str = "tmp") -> str:
    """The name prefix of this process's temporaries for destination ``name``: ``.NAME.tmp-HOST-PID-``."""
    return f".{name}.{kind}-{_host()}-{os.getpid()}-"


def _umask() -> int:
    """The process umask; read from /proc where it can be, since setting it to read it back is not
    thread-safe (another thread could create a file while it is 0)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_file(path: str | Path) -> None:
    """Flush a file's data to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """``mkdtemp`` in ``parent`` with the permissions of a plain ``mkdir`` (``mkdtemp`` alone makes 0700)."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(path, 0o777 & ~_umask())
    return path


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OverflowError:
        return False
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale_temps(folder: str | Path) -> list[str]:
    """Tidy what killed writers left in ``folder``; returns the names acted on.

    Only entries named by this module's scheme, written on this machine, and whose PID is no longer
    running are touched:
    a group-commit journal is rolled forward (its temporaries were complete and fsync'ed when it was
    written), a folder that ``atomic_dir`` moved aside is put back if nothing replaced it (else removed),
    and temporaries are removed.
    """
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    stale: dict[str, list[Path]] = {"commit": [], "old": [], "tmp": []}
    host = _host()
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m and m["host"] == host and not _pid_running(int(m["pid"])):
            stale[m["kind"]].append(entry)
    done = []
    for journal in stale["commit"]:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            for tmp_name, final_name in json.loads(journal.read_text(encoding="utf-8"))["renames"]:
                if (folder / tmp_name).exists():
                    os.replace(folder / tmp_name, folder / final_name)
        journal.unlink(missing_ok=True)
        done.append(journal.name)
    for old in stale["old"]:
        dest = folder / _TEMP_NAME.match(old.name)["name"]
        with contextlib.suppress(OSError):  # another process may be tidying the same folder
            if dest.exists():
                _remove(old)
            else:  # killed between moving the old folder aside and renaming the new one in
                os.rename(old, dest)
            done.append(old.name)
    for tmp in stale["tmp"]:
        if tmp.exists():
            _remove(tmp)
            done.append(tmp.name)
    return done


def _new_temp_file(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name))
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def _prepare(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(folder)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (an empty file); if the block succeeds it is fsync'ed and
    renamed to ``path``, otherwise removed.

    Example::

        with atomic_path("model.safetensors") as tmp:
            save_file(tensors, tmp)
    """
    path = Path(path)
    _prepare(path.parent)
    tmp = _new_temp_file(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_group(*paths: str | Path) -> Iterator[list[Path]]:
    """Like ``atomic_path`` for several files of one folder that must change together (a data file and
    its statistics): yields one temporary path per destination; all are renamed, or none.

    The renames are listed first in an fsync'ed journal (``.NAME.commit-HOST-PID-...``); a kill during the
    renames leaves the journal, and the next write into the folder (``clean_stale_temps``) finishes them.
    """
    dests = [Path(p) for p in paths]
    if not dests or len({p.parent.resolve() for p in dests}) != 1:
        raise ValueError(f"atomic_group needs files of one folder, got {[str(p) for p in dests]}")
    folder = dests[0].parent
    _prepare(folder)
    tmps: list[Path] = []
    committing = False
    try:
        for dest in dests:
            tmps.append(_new_temp_file(dest))
        yield list(tmps)
        for tmp in tmps:
            fsync_file(tmp)
        fd, journal = tempfile.mkstemp(dir=folder, prefix=temp_prefix(dests[0].name, "commit"))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"renames": [[t.name, d.name] for t, d in zip(tmps, dests)]}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        committing = True  # from here on the journal, not this block, owns the temporaries
        for tmp, dest in zip(tmps, dests):
            os.replace(tmp, dest)
        fsync_dir(folder)
        os.unlink(journal)
    except BaseException:
        if not committing:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)
        raise
    fsync_dir(folder)


def _fsync_tree(root: Path) -> None:
    for sub in sorted(root.rglob("*")):
        if sub.is_file() and not sub.is_symlink():
            fsync_file(sub)
        elif sub.is_dir():
            fsync_dir(sub)
    fsync_dir(root)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; if the block succeeds it replaces ``path`` (a whole saved
    model, say), otherwise it is removed.

    An existing ``path`` is first renamed aside (``.NAME.old-HOST-PID-...``), then the new folder is renamed in,
    then the old one is deleted. A kill between the two renames leaves no ``path``; the next write into
    the folder (``clean_stale_temps``) renames the old one back.
    """
    path = Path(path)
    _prepare(path.parent)
    tmp = make_temp_dir(path.parent, temp_prefix(path.name))
    old: Path | None = None
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists() or path.is_symlink():
            old = path.parent / (temp_prefix(path.name, "old") + secrets.token_hex(4))
            os.rename(path, old)
        os.rename(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.rename(old, path)
            old = None
        raise
    finally:
        if old is not None:
            _remove(old)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_text(obj: Any, *, indent: int | None = 2) -> str:
    """One JSON document as text (UTF-8, newline-terminated); NaN / infinity raise ``ValueError``."""
    return json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n"


def dump_jsonl(records: Iterable[Mapping], fh: IO[str]) -> int:
    """Write one strict JSON object per line to an open text file; returns the count."""
    n = 0
    for record in records:
        fh.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        n += 1
    return n


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Write one JSON document atomically; NaN / infinity raise ``ValueError`` before anything is written."""
    return write_text_atomic(path, json_text(obj, indent=indent))


def write_jsonl_atomic(path: str | Path, records: Iterable[Mapping]) -> int:
    """Write one JSON object per line (UTF-8) atomically; returns the count.

    ``records`` may be a generator that raises half-way (a validation error): then ``path`` is untouched.
    A NaN or infinity anywhere is a ``ValueError``, with the same effect.
    """
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        return dump_jsonl(records, fh)


def write_png_atomic(fig, path: str | Path, *, dpi: int = 100) -> Path:
    """``fig.savefig`` as PNG through ``atomic_path``: a failed or killed save never leaves a truncated PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)
