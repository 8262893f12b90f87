"""``alphapo experiment RECIPE.yaml --out OUT``: run a grid of methods x hyper-parameters x seeds.

What happens:

1. The recipe is validated (``alphapo.experiments.recipe``) and expanded into runs, one per
   (configuration, seed).
2. Finished runs are skipped: a run is finished when ``OUT/runs/<method>/<config>-<hash>/seed<N>/result.json``
   exists. That file is written last, atomically (temp file + ``os.replace``), so a run killed midway
   leaves no ``result.json`` and is re-run from scratch (its folder is cleared first). The folder name
   carries a hash of the job name and every parameter, so changing a parameter in the recipe gives new
   runs and never reuses a result computed with other values.
3. The other runs execute in up to ``--jobs`` parallel worker processes (default: the CPU cores this
   process may use, divided by the recipe's ``threads``, at least 1). ``--jobs 1`` runs them in this
   process. Workers are started with ``spawn`` (a fresh interpreter, ``OMP_NUM_THREADS`` etc. set to
   ``threads``) and import the modules that registered the runs' jobs and stages, so a job registered in
   an importable module (or in the ``__main__`` script) is found there. Runs are ordered round-robin over seeds so that parallel workers start on different seeds.
   A failing run writes ``error.txt`` in its folder; the others go on, and the command then fails naming
   the failed runs (rerun it to retry them; finished runs are kept).
4. Before a run, the shared stages its job needs (for the toy job: the SFT policy and the pair set) are
   made sure of, once per seed and per value of the parameters they read, under ``SHARED/<stage>/``
   (``SHARED`` is ``--shared-dir``, default ``OUT/shared``):
   the first worker to need one takes a file lock (``fcntl.flock``) and computes it into a fresh folder;
   ``stage.json`` written atomically at the end marks it done; workers that wait on the lock then read it.
   Each computation appends a line to ``SHARED/<stage>/computed.log`` (key, seed, pid, seconds).
   A stage's folder name is the seed and a hash of the stage names and of every parameter the stage
   (and the stages before it) read, so one ``--shared-dir`` may serve many recipes and sweeps, also at
   the same time: recipes whose runs need the same SFT policy and pair set of a seed compute them once
   (``make results`` runs every recipe that way); a recipe with other values gets other folders.
5. Progress: one line per finished run on stderr: runs done, runs to go, the ETA (elapsed time of this
   invocation per finished run x runs to go: parallel speed included).
6. When every run has a result, the tables are written (atomically): ``OUT/results.csv`` and
   ``OUT/results.md`` (one row per configuration: for each metric the mean over seeds and its Student-t
   95% interval, ``alphapo.experiments.stats.mean_ci``), ``OUT/comparisons.csv`` (the recipe's
   ``compare`` pairs: paired per-prompt differences, ``stats.paired_difference``), and
   ``OUT/summary.json`` with all of it. No table is written while a run is missing.

Only one ``alphapo experiment`` may work in an ``OUT`` folder at a time (``OUT/.lock``); a second one
fails at once instead of racing the first.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from alphapo.errors import UserError
from alphapo.experiments.recipe import Recipe, RunSpec, expand_grid, load_recipe
from alphapo.experiments.registry import get_job, get_stage
from alphapo.experiments.stats import mean_ci, paired_difference
from alphapo.io import write_text_atomic

__all__ = ["run_experiment", "file_lock", "execute_run", "ensure_stages", "run_all", "default_jobs", "results_table", "comparisons", "render_markdown",
           "RESULT_FILE"]

RESULT_FILE = "result.json"
STAGE_FILE = "stage.json"


# ---------------------------------------------------------------------------------------------- file edges
@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError as err:
            raise UserError(f"{path.parent}: another alphapo experiment or sweep is working in this folder "
                            f"(it holds {path.name}); wait for it or use another --out") from err
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _spec_dict(spec: RunSpec) -> dict:
    return {"method": spec.method, "config": spec.config, "overrides": spec.overrides, "params": spec.params,
            "seed": spec.seed, "job": spec.job, "config_hash": spec.config_hash}


def _read_result(spec: RunSpec, root: Path) -> dict | None:
    path = root / "runs" / spec.rel_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:  # cannot happen with atomic writes; never trust it if it does
        raise UserError(f"{path}: not valid JSON ({err.msg}); delete it to re-run that run") from err
    if data.get("spec", {}).get("config_hash") != spec.config_hash or data["spec"].get("seed") != spec.seed:
        raise UserError(f"{path}: was written for other parameters than this recipe's; delete it to re-run")
    return data


# ----------------------------------------------------------------------------------------- shared stages
def _stage_key(names: Sequence[str], params: dict, seed: int) -> str:
    import hashlib

    keys = sorted({k for n in names for k in get_stage(n).keys})
    blob = json.dumps({"stages": list(names), "params": {k: params[k] for k in keys}}, sort_keys=True)
    return f"seed{seed}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def ensure_stages(stages: Sequence[str], params: dict, seed: int, shared_dir: Path,
                  threads: int = 1) -> dict[str, dict]:
    """Compute (or read) each shared stage in order under ``shared_dir``; returns ``{stage name: what it
    returned}``."""
    shared: dict[str, dict] = {}
    for i, name in enumerate(stages):
        stage = get_stage(name)
        key = _stage_key(stages[:i + 1], params, seed)
        folder = shared_dir / name / key
        marker = folder / STAGE_FILE
        if not marker.is_file():
            with file_lock(shared_dir / name / f"{key}.lock"):
                if not marker.is_file():  # nobody finished it while we waited
                    if folder.exists():  # left by a killed run: start over
                        shutil.rmtree(folder)
                    folder.mkdir(parents=True)
                    sub = {k: params[k] for k in stage.keys}
                    sub["seed"], sub["threads"] = seed, threads
                    start = time.time()
                    result = stage.fn(sub, dict(shared), folder)
                    if not isinstance(result, dict):
                        raise TypeError(f"shared stage {name!r} returned {type(result).__name__}, not a dict")
                    seconds = round(time.time() - start, 3)
                    write_text_atomic(marker, json.dumps({"stage": name, "params": sub, "result": result,
                                                     "seconds": seconds}, indent=2))
                    with open(shared_dir / name / "computed.log", "a", encoding="utf-8") as log:
                        log.write(json.dumps({"key": key, "seed": seed, "pid": os.getpid(), "seconds": seconds})
                                  + "\n")
        shared[name] = json.loads(marker.read_text(encoding="utf-8"))["result"]
    return shared


# ------------------------------------------------------------------------------------------------- a run
def _check_job_result(result: Any, job: str) -> dict:
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
        raise TypeError(f"job {job!r} must return {{'metrics': {{name: float}}, 'per_prompt': ...}}, "
                        f"got {type(result).__name__}")
    unknown = set(result) - {"metrics", "per_prompt", "extra"}
    if unknown:
        raise TypeError(f"job {job!r} returned unknown keys {sorted(unknown)} (allowed: metrics, per_prompt, extra)")
    metrics = {}
    for k, v in result["metrics"].items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"job {job!r}: metric {k!r} is {v!r}, not a number")
        metrics[str(k)] = float(v)
    per_prompt = {}
    for k, vals in (result.get("per_prompt") or {}).items():
        if not isinstance(vals, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in vals):
            raise TypeError(f"job {job!r}: per_prompt[{k!r}] must be a list of numbers")
        per_prompt[str(k)] = [float(v) for v in vals]
    return {"metrics": metrics, "per_prompt": per_prompt, "extra": result.get("extra", {})}


def execute_run(spec: RunSpec, root: Path, threads: int = 1, shared_dir: Path | None = None) -> dict:
    """Run one job (its shared stages first, under ``shared_dir``, default ``root/shared``) and write its
    ``result.json``; returns the result.

    The job gets its parameters plus ``seed`` and ``threads`` (the recipe's CPU threads per run).
    """
    job = get_job(spec.job)
    folder = root / "runs" / spec.rel_dir
    if folder.exists():  # a run killed before its result: start over
        shutil.rmtree(folder)
    work = folder / "work"
    work.mkdir(parents=True)
    start = time.time()
    shared = ensure_stages(job.stages, spec.params, spec.seed, root / "shared" if shared_dir is None
                           else Path(shared_dir), threads)
    out = _check_job_result(job.fn({**spec.params, "seed": spec.seed, "threads": threads}, shared, work), spec.job)
    result = {"spec": _spec_dict(spec), **out, "seconds": round(time.time() - start, 3)}
    write_text_atomic(folder / RESULT_FILE, json.dumps(result, indent=1))
    return result


def _worker(spec: RunSpec, root: str, threads: int, shared_dir: str | None = None) -> tuple[bool, Any]:
    try:
        return True, execute_run(spec, Path(root), threads, None if shared_dir is None else Path(shared_dir))
    except Exception as err:  # one failing run must not stop the others
        text = "".join(traceback.format_exception(err))
        with contextlib.suppress(OSError):
            write_text_atomic(Path(root) / "runs" / spec.rel_dir / "error.txt", text)
        return False, f"{type(err).__name__}: {err}"


def _init_worker(threads: int, modules: Sequence[str]) -> None:
    """Worker start-up: thread counts, then import the modules that register the jobs and stages."""
    import importlib

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    for module in modules:
        importlib.import_module(module)


def _registering_modules(runs: Sequence[RunSpec]) -> list[str]:
    """Modules whose import registers the runs' jobs and stages (a fresh worker process imports them)."""
    modules: list[str] = []
    for name in sorted({r.job for r in runs}):
        job = get_job(name)
        for fn in [job.fn, *(get_stage(s).fn for s in job.stages)]:
            module = "__mp_main__" if fn.__module__ == "__main__" else fn.__module__
            if module not in modules and module != "__mp_main__":  # __main__ is re-run by spawn itself
                modules.append(module)
    return modules


def default_jobs(threads: int = 1) -> int:
    """Parallel runs that fit the machine: usable CPU cores // threads per run (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, threads))


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _interleave(runs: Sequence[RunSpec]) -> list[RunSpec]:
    """Round-robin over seeds: parallel workers start on different seeds (different shared stages)."""
    index: dict[int, int] = {}
    keyed = []
    for i, r in enumerate(runs):
        index[r.seed] = index.get(r.seed, -1) + 1
        keyed.append((index[r.seed], i, r))
    return [r for _, _, r in sorted(keyed, key=lambda t: (t[0], t[1]))]


def run_all(runs: Sequence[RunSpec], root: str | Path, *, jobs: int = 1, threads: int = 1,
            progress: bool = True, label: str = "experiment",
            shared_dir: str | Path | None = None) -> dict[str, dict]:
    """Make sure every run in ``runs`` has a result; returns ``{run.rel_dir: result}``. Shared stages go to
    ``shared_dir`` (default ``root/shared``).

    Raises ``UserError`` naming the runs that failed (after the others have finished).
    """
    root = Path(root)
    shared = str(root / "shared" if shared_dir is None else Path(shared_dir))
    results: dict[str, dict] = {}
    todo: list[RunSpec] = []
    seen = set()
    for spec in runs:
        if spec.rel_dir in seen:
            continue
        seen.add(spec.rel_dir)
        found = _read_result(spec, root)
        if found is None:
            todo.append(spec)
        else:
            results[spec.rel_dir] = found
    total = len(seen)

    def say(msg: str) -> None:
        if progress:
            print(f"[{label} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if results:
        say(f"{len(results)}/{total} runs already finished (kept), {len(todo)} to go")
    failed: list[tuple[RunSpec, str]] = []
    start = time.time()
    n_new = 0

    def done(spec: RunSpec, ok: bool, payload: Any) -> None:
        nonlocal n_new
        n_new += 1
        if ok:
            results[spec.rel_dir] = payload
        else:
            failed.append((spec, payload))
        to_go = len(todo) - n_new
        eta = (time.time() - start) / n_new * to_go
        what = f"{payload['seconds']:.1f} s" if ok else f"FAILED: {payload}"
        say(f"{len(results) + len(failed)}/{total} runs done, {to_go} to go, ETA {_fmt_seconds(eta)} | "
            f"{spec.config} seed {spec.seed}: {what}")

    ordered = _interleave(todo)
    if jobs <= 1 or len(ordered) <= 1:
        for spec in ordered:
            ok, payload = _worker(spec, str(root), threads, shared)
            done(spec, ok, payload)
    elif ordered:
        # spawn, not fork: a forked child of a process whose torch/OpenMP threads are running can hang
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(ordered)), mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads, _registering_modules(ordered))) as pool:
            pending = {pool.submit(_worker, spec, str(root), threads, shared): spec for spec in ordered}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        ok, payload = fut.result()
                        done(pending.pop(fut), ok, payload)
            except BrokenProcessPool as err:
                pool.shutdown(wait=False, cancel_futures=True)
                raise UserError(f"a worker process died (killed, or out of memory?) while running "
                                f"{len(pending)} run(s); finished runs are kept: rerun the same command to "
                                "resume (with a smaller --jobs if memory ran out)") from err
            except BaseException:  # Ctrl-C: do not start the queued runs
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    if failed:
        lines = "; ".join(f"{s.config} seed {s.seed} ({root / 'runs' / s.rel_dir / 'error.txt'}): {msg}"
                          for s, msg in failed)
        raise UserError(f"{len(failed)} of {total} runs failed: {lines}. Finished runs are kept; fix the cause "
                        "and rerun the same command to run the rest")
    return results


# ------------------------------------------------------------------------------------------------- tables
def _configs(runs: Sequence[RunSpec]) -> list[tuple[str, str, dict, list[RunSpec]]]:
    """(method, config label, overrides, runs over seeds) in first-seen order."""
    groups: dict[tuple[str, str], list[RunSpec]] = {}
    for r in runs:
        groups.setdefault((r.method, r.config_hash), []).append(r)
    return [(rs[0].method, rs[0].config, rs[0].overrides, rs) for rs in groups.values()]


def table_metrics(runs: Sequence[RunSpec], results: dict[str, dict], wanted: Sequence[str] | None) -> list[str]:
    """The metric columns: ``wanted`` (each must be in every run), else the metrics all runs report."""
    if wanted:
        for r in runs:
            missing = [m for m in wanted if m not in results[r.rel_dir]["metrics"]]
            if missing:
                have = sorted(results[r.rel_dir]["metrics"])
                raise UserError(f"run {r.config} seed {r.seed} reports no metric {missing[0]!r}"
                                f"{_near(missing[0], have)}; it reports {have}")
        return list(wanted)
    common = None
    for r in runs:
        keys = list(results[r.rel_dir]["metrics"])
        common = keys if common is None else [k for k in common if k in keys]
    return common or []


def _near(name: str, choices) -> str:
    from alphapo.experiments.registry import nearest

    return nearest(name, choices)


def results_table(runs: Sequence[RunSpec], results: dict[str, dict], metrics: Sequence[str],
                  confidence: float = 0.95) -> list[dict]:
    """One row per configuration: method, config, overrides, every parameter, seeds, and per metric the mean
    and the Student-t interval over seeds."""
    rows = []
    for method, label, overrides, rs in _configs(runs):
        row: dict[str, Any] = {"method": method, "config": label, "overrides": overrides, "params": rs[0].params,
                               "seeds": [r.seed for r in rs], "n_seeds": len(rs), "metrics": {}}
        for m in metrics:
            mean, lo, hi = mean_ci([results[r.rel_dir]["metrics"][m] for r in rs], confidence)
            row["metrics"][m] = {"mean": mean, "ci_low": lo, "ci_high": hi}
        rows.append(row)
    return rows


def comparisons(runs: Sequence[RunSpec], results: dict[str, dict], pairs: Sequence[tuple[str, str]],
                metric: str, confidence: float = 0.95) -> list[dict]:
    """Paired per-prompt differences ``A - B`` on ``metric`` for every configuration of A vs of B."""
    configs = _configs(runs)
    out = []
    for a, b in pairs:
        for _, la, _, ra in (c for c in configs if c[0] == a):
            for _, lb, _, rb in (c for c in configs if c[0] == b):
                sides = []
                for rs in (ra, rb):
                    side = {}
                    for r in rs:
                        pp = results[r.rel_dir]["per_prompt"]
                        if metric not in pp:
                            raise UserError(f"compare: run {r.config} seed {r.seed} has no per-prompt scores "
                                            f"{metric!r}{_near(metric, pp)}; it has {sorted(pp)}")
                        side[r.seed] = pp[metric]
                    sides.append(side)
                d = paired_difference(sides[0], sides[1], confidence=confidence, what=f"compare {la} - {lb}")
                out.append({"a": la, "b": lb, "metric": metric, **d})
    return out


def _f(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _ci(lo: float, hi: float) -> str:
    return "n/a" if math.isnan(lo) else f"[{_f(lo)}, {_f(hi)}]"


def render_markdown(title: str, rows: list[dict], metrics: Sequence[str], comps: list[dict]) -> str:
    """``results.md``: the per-configuration table and the paired comparisons (pure)."""
    lines = [f"# {title}", "",
             "Mean over seeds and its Student-t 95% interval (n/a with a single seed).", "",
             "| method | configuration | seeds | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for row in rows:
        cells = [f"{_f(row['metrics'][m]['mean'])} {_ci(row['metrics'][m]['ci_low'], row['metrics'][m]['ci_high'])}"
                 for m in metrics]
        lines.append(f"| {row['method']} | {row['config']} | {row['n_seeds']} | " + " | ".join(cells) + " |")
    if comps:
        lines += ["", "## Paired comparisons (A - B, per-prompt differences)", "",
                  "95% CI over prompts: paired t over all (seed, prompt) differences (prompt noise only). "
                  "95% CI over seeds: t-interval of the per-seed mean differences (training-seed variation; "
                  "quote this one).", "",
                  "| A | B | metric | mean difference | 95% CI over prompts | p (paired t) | 95% CI over seeds | "
                  "pairs | seeds |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in comps:
            lines.append(f"| {c['a']} | {c['b']} | {c['metric']} | {_f(c['mean_diff'])} | "
                         f"{_ci(*c['ci_prompts'])} | {_f(c['p_prompts'], 3)} | {_ci(*c['ci_seeds'])} | "
                         f"{c['n_pairs']} | {c['n_seeds']} |")
    return "\n".join(lines) + "\n"


def _csv_text(header: list[str], body: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(body)
    return buf.getvalue()


def results_csv(rows: list[dict], metrics: Sequence[str]) -> str:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row["overrides"] if k not in keys]
    header = ["method", "config", *keys, "n_seeds", "seeds"]
    for m in metrics:
        header += [f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high"]
    body = []
    for row in rows:
        line = [row["method"], row["config"], *[row["overrides"].get(k, "") for k in keys], row["n_seeds"],
                " ".join(map(str, row["seeds"]))]
        for m in metrics:
            v = row["metrics"][m]
            line += [repr(v["mean"]), repr(v["ci_low"]), repr(v["ci_high"])]
        body.append(line)
    return _csv_text(header, body)


def comparisons_csv(comps: list[dict]) -> str:
    header = ["a", "b", "metric", "mean_diff", "ci_prompts_low", "ci_prompts_high", "p_prompts", "ci_seeds_low",
              "ci_seeds_high", "n_pairs", "n_seeds"]
    body = [[c["a"], c["b"], c["metric"], repr(c["mean_diff"]), repr(c["ci_prompts"][0]), repr(c["ci_prompts"][1]),
             repr(c["p_prompts"]), repr(c["ci_seeds"][0]), repr(c["ci_seeds"][1]), c["n_pairs"], c["n_seeds"]]
            for c in comps]
    return _csv_text(header, body)


def _json_safe(obj: Any) -> Any:
    """NaN -> None, so summary.json is strict JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------ command
def run_experiment(recipe: str | Path | Recipe, out: str | Path, *, jobs: int | None = None,
                   progress: bool = True, shared_dir: str | Path | None = None) -> dict:
    """Run (or finish) every run of the recipe into ``out`` and write the tables; returns the summary.
    Shared stages go to ``shared_dir`` (default ``out/shared``)."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if recipe.sweep is not None:
        raise UserError(f"{recipe.path}: this recipe has a 'sweep' section; run it with 'alphapo sweep'")
    runs = expand_grid(recipe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = default_jobs(recipe.threads) if jobs is None else jobs
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    with file_lock(out / ".lock", blocking=False):
        start = time.time()
        results = run_all(runs, out, jobs=jobs, threads=recipe.threads, progress=progress, shared_dir=shared_dir)
        metrics = table_metrics(runs, results, recipe.metrics)
        rows = results_table(runs, results, metrics)
        comps = comparisons(runs, results, recipe.compare.pairs, recipe.compare.metric) if recipe.compare else []
        summary = {"name": recipe.name, "job": recipe.job.name, "seeds": list(recipe.seeds), "n_runs": len(runs),
                   "metrics": metrics, "rows": rows, "comparisons": comps,
                   "wall_time_s_this_invocation": round(time.time() - start, 2)}
        write_text_atomic(out / "results.csv", results_csv(rows, metrics))
        write_text_atomic(out / "comparisons.csv", comparisons_csv(comps))
        write_text_atomic(out / "results.md", render_markdown(recipe.name, rows, metrics, comps))
        write_text_atomic(out / "summary.json", json.dumps(_json_safe(summary), indent=1))
    return summary
