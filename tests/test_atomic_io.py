"""``alphapo.io``: atomic writers under kills, file modes, strict JSON, stale-temporary recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from alphapo.io import (
    _host,
    atomic_dir,
    atomic_group,
    atomic_path,
    clean_stale_temps,
    write_json_atomic,
    write_jsonl_atomic,
    write_png_atomic,
    write_text_atomic,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")
HOST = _host()


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, **kwargs)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_writer_killed_midway_leaves_no_partial_file_and_the_next_write_cleans_up(tmp_path):
    out = tmp_path / "pairs.jsonl"
    out.write_text('{"old": 1}\n')
    proc = _python(f"""
        import sys, time
        from alphapo.io import write_jsonl_atomic
        def rows():
            for i in range(1000):
                yield {{"i": i}}
                if i == 3:
                    sys.stdout.write("ready\\n"); sys.stdout.flush()
                    time.sleep(60)
        write_jsonl_atomic({str(out)!r}, rows())
    """, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert out.read_text() == '{"old": 1}\n'  # the target was never touched
    orphans = [n for n in _names(tmp_path) if n != "pairs.jsonl"]
    assert len(orphans) == 1 and orphans[0].startswith(f".pairs.jsonl.tmp-{HOST}-{proc.pid}-")
    mine = tmp_path / f".other.json.tmp-{HOST}-{os.getpid()}-live1234"  # a live writer's temporary: left alone
    mine.write_text("{")
    assert write_jsonl_atomic(out, [{"new": 2}]) == 1
    assert out.read_text() == '{"new": 2}\n'
    assert _names(tmp_path) == sorted([mine.name, "pairs.jsonl"])


def test_failure_inside_the_block_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    out = tmp_path / "out.jsonl"
    write_jsonl_atomic(out, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(out, rows())
    assert out.read_text() == '{"a": 1}\n' and _names(tmp_path) == ["out.jsonl"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_json_writers_refuse_nan_and_infinity_before_writing(tmp_path, bad):
    with pytest.raises(ValueError, match="Out of range float"):
        write_json_atomic(tmp_path / "s.json", {"x": [1.0, bad]})
    with pytest.raises(ValueError, match="Out of range float"):
        write_jsonl_atomic(tmp_path / "r.jsonl", [{"ok": 1}, {"score": bad}])
    assert _names(tmp_path) == []
    write_json_atomic(tmp_path / "s.json", {"x": [1.0, None]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"x": [1.0, None]}


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                       (0o002, 0o664, 0o775)])
def test_modes_follow_the_umask_like_a_plain_open(tmp_path, umask, file_mode, dir_mode):
    from matplotlib.figure import Figure

    old = os.umask(umask)
    try:
        paths = [write_text_atomic(tmp_path / "a.txt", "x"), write_json_atomic(tmp_path / "b.json", {}),
                 write_png_atomic(Figure(figsize=(1, 1)), tmp_path / "c.png", dpi=10)]
        write_jsonl_atomic(tmp_path / "d.jsonl", [{}])
        paths.append(tmp_path / "d.jsonl")
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "w.bin").write_bytes(b"1")
        open(tmp_path / "plain.txt", "w").close()
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in paths} == {oct(file_mode)}
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == file_mode  # the same as open() gives
    assert (tmp_path / "model").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_half_written_temporary_is_not_matched_by_a_glob_of_the_data_files(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    with atomic_path(tmp_path / "b.jsonl") as tmp:
        assert tmp.name.startswith(f".b.jsonl.tmp-{HOST}-{os.getpid()}-") and tmp.suffix != ".jsonl"
        tmp.write_text("{")
        assert [p.name for p in tmp_path.glob("*.jsonl")] == ["a.jsonl"]  # pathlib globs match dotfiles
    assert (tmp_path / "b.jsonl").read_text() == "{"


def test_group_commit_is_all_or_nothing(tmp_path):
    a, b = tmp_path / "pairs.jsonl", tmp_path / "pairs.jsonl.stats.json"
    with pytest.raises(RuntimeError), atomic_group(a, b) as (ta, tb):
        ta.write_text("new pairs\n")
        raise RuntimeError("judge crashed")  # before the stats exist: neither file appears
    assert _names(tmp_path) == []
    with atomic_group(a, b) as (ta, tb):
        ta.write_text("p1\n")
        tb.write_text("s1\n")
    assert (a.read_text(), b.read_text()) == ("p1\n", "s1\n") and _names(tmp_path) == sorted([a.name, b.name])
    with pytest.raises(ValueError, match="one folder"):
        with atomic_group(a, tmp_path / "sub" / "x"):
            pass


def test_group_commit_killed_between_renames_is_finished_by_the_next_write(tmp_path):
    a, b = tmp_path / "pairs.jsonl", tmp_path / "pairs.jsonl.stats.json"
    a.write_text("p1\n")
    b.write_text("s1\n")
    proc = _python(f"""
        import os, signal
        import alphapo.io as io
        real = os.replace
        def replace_then_die(src, dst):
            real(src, dst)
            os.kill(os.getpid(), signal.SIGKILL)  # after the first of the two renames
        io.os.replace = replace_then_die
        with io.atomic_group({str(a)!r}, {str(b)!r}) as (ta, tb):
            ta.write_text("p2\\n")
            tb.write_text("s2\\n")
    """)
    assert proc.wait() == -signal.SIGKILL
    assert (a.read_text(), b.read_text()) == ("p2\n", "s1\n")  # torn: new pairs, old stats
    assert any(n.startswith(f".pairs.jsonl.commit-{HOST}-{proc.pid}-") for n in _names(tmp_path))
    done = clean_stale_temps(tmp_path)
    assert len(done) == 1 and (a.read_text(), b.read_text()) == ("p2\n", "s2\n")
    assert _names(tmp_path) == sorted([a.name, b.name])


def test_atomic_dir_replaces_a_folder_and_a_kill_between_renames_is_undone(tmp_path):
    dest = tmp_path / "final"
    with atomic_dir(dest) as tmp:
        (tmp / "w.bin").write_bytes(b"v1")
    proc = _python(f"""
        import os, signal
        import alphapo.io as io
        real = os.rename
        calls = []
        def rename(src, dst):
            calls.append(src)
            if len(calls) == 2:  # the old folder is aside, the new one not yet in place
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)
        io.os.rename = rename
        with io.atomic_dir({str(dest)!r}) as tmp:
            (tmp / "w.bin").write_bytes(b"v2")
    """)
    assert proc.wait() == -signal.SIGKILL
    assert not dest.exists()
    clean_stale_temps(tmp_path)
    assert (dest / "w.bin").read_bytes() == b"v1" and _names(tmp_path) == ["final"]
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "w.bin").write_bytes(b"v3")
        raise RuntimeError("save failed")
    assert (dest / "w.bin").read_bytes() == b"v1" and _names(tmp_path) == ["final"]


def test_temporaries_of_running_processes_are_not_cleaned(tmp_path):
    proc = _python("import time; time.sleep(30)")
    try:
        time.sleep(0.05)
        live = tmp_path / f".x.jsonl.tmp-{HOST}-{proc.pid}-abc12345"
        live.write_text("partial")
        assert clean_stale_temps(tmp_path) == [] and live.exists()
    finally:
        proc.kill()
        proc.wait()
    assert clean_stale_temps(tmp_path) == [live.name] and not live.exists()


# A real command, killed by SIGKILL right after its first output row reached the temporary file.
_KILLED_AFTER_ONE_ROW = """
    import os, signal, sys
    import alphapo.io as io
    def dump_then_die(records, fh):
        for record in records:
            fh.write(io.json.dumps(record) + "\\n")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    io.dump_jsonl = dump_then_die
    from alphapo.cli import main
    sys.exit(main(sys.argv[1:]))
"""

_PAIRS = [{"id": "1", "prompt": "What is 12 plus 7?", "chosen": "19", "rejected": "20",
           "chosen_score": 9.0, "rejected_score": 2.0},
          {"id": "2", "prompt": "Say hi", "chosen": "Hello!", "rejected": "Go away.",
           "chosen_score": 7.0, "rejected_score": 1.0}]


def _kill_then_rerun(argv: list[str], folder: Path, outputs: list[str]) -> None:
    from alphapo.cli import main

    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED_AFTER_ONE_ROW), *argv], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = [n for n in _names(folder) if n.startswith(".")]
    assert left and all(".tmp-" in n for n in left)  # the orphans a killed run leaves
    assert not any((folder / name).exists() for name in outputs)  # but no output, partial or whole
    assert main(argv) == 0
    assert [n for n in _names(folder) if n.startswith(".")] == []
    assert all((folder / name).is_file() for name in outputs)


@pytest.mark.parametrize("command", [["data", "convert"], ["data", "relabel"]])
def test_a_killed_data_command_leaves_orphans_that_its_next_run_removes(tmp_path, command):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _PAIRS))
    out_dir = tmp_path / "out"
    _kill_then_rerun([*command, str(src), str(out_dir / "o.jsonl")], out_dir, ["o.jsonl"])


@pytest.mark.slow
def test_a_killed_generate_leaves_neither_file_and_its_next_run_writes_both(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n{"prompt": "yo"}\n')
    out_dir = tmp_path / "gen"
    argv = ["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--judge", "length",
            "--k", "3", "--max-new-tokens", "6", "--temperature", "1.0", "--no-progress",
            "--out", str(out_dir / "pairs.jsonl")]
    _kill_then_rerun(argv, out_dir, ["pairs.jsonl", "pairs.jsonl.stats.json"])
    stats = json.loads((out_dir / "pairs.jsonl.stats.json").read_text())
    rows = (out_dir / "pairs.jsonl").read_text().splitlines()
    assert stats["n_kept"] == len(rows) and stats["n_prompts"] == 2


def test_other_machines_temporaries_and_look_alike_names_are_left_alone(tmp_path):
    """On a shared file system a dead-looking PID of another machine may be a live writer there, and a
    user's own '.data.tmp-20240101-x' or '.results.old-2023-05' is not ours: none of them is touched."""
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process here
    other_host = tmp_path / f".pairs.jsonl.tmp-someothernode-{dead}-abcd1234"
    look_alikes = [tmp_path / ".data.tmp-20240101-x", tmp_path / ".results.old-2023-05",
                   tmp_path / f".pairs.jsonl.tmp-{HOST}-{dead}-toolongsuffix"]
    ours = tmp_path / f".pairs.jsonl.tmp-{HOST}-{dead}-abcd1234"
    for p in [other_host, *look_alikes, ours]:
        p.write_text("x")
    assert clean_stale_temps(tmp_path) == [ours.name]
    assert all(p.exists() for p in [other_host, *look_alikes]) and not ours.exists()
    assert not (tmp_path / "results").exists()  # a look-alike "old" folder is never renamed back
