"""What a sweeper costs per trial: ecosplit_optuna against the released hydra-optuna-sweeper.

Both sweep the same trivial Hydra app (a quadratic in x and y, nothing else: the task itself
costs microseconds) with the same sampler - Optuna's TPE, seed 0, the official plugin's
settings (independent TPE: `multivariate=false`; everything else at Optuna's defaults) - on an
SQLite file in a temp dir, with Hydra's basic launcher (one row also with ecosplit's). Each sweeper runs the study with
n_trials=10 and with n_trials=110 as separate processes; the marginal cost of a trial is
(t110 - t10) / 100, so process start-up, imports and opening the study cancel out and what is
left is per trial: ask, the sampler, Hydra's job launch, tell and whatever the sweeper adds.
Runs are interleaved (repeat r: 10 then 110 trials, the sweepers in turn) and the median of
the repeats is printed with the ratio: the machine is shared, so only side-by-side figures
mean anything. Printed: wall time, and the CPU time of the sweeper's process (user + system; it
leaves out waiting for the disk, and is less sensitive to other processes on the machine).
The official plugin asks 2 trials per batch (its default n_jobs), ecosplit_optuna 1 (its default).

Sweepers:
  ecosplit_optuna          this repo's plugin (hydra_plugins/), this venv's Optuna and Hydra, its
                           defaults (SQLite in write-ahead-log mode: hydra.sweeper.sqlite_wal).
  ecosplit_optuna, no WAL  the same with hydra.sweeper.sqlite_wal=false: SQLite's own journal, as
                           the official plugin leaves it; what is left is fewer round trips.
  ecosplit_optuna + ecosplit launcher
                           the first with hydra/launcher=ecosplit (the basic launcher with less
                           work per job, hydra_plugins/ecosplit_optuna_sweeper/launcher.py), as
                           ecosplit's sweep.py runs; every other row uses Hydra's basic launcher.
  official, Optuna 5       hydra-optuna-sweeper 1.2.0 from <venv>/coexist (`make install`
                           puts it there with --no-deps for a coexistence test): its code on
                           this venv's Optuna, SQLAlchemy and Hydra, so the difference is the
                           two plugins' own work.
  official, own stack      (--official-venv) the same plugin with the versions it pins
                           (optuna 2.10.1, sqlalchemy<2, hydra-core 1.3.8) in a separate venv,
                           built once under ~/.cache/ecosplit-bench/ from the package registry.

    .venv/bin/python benchmarks/bench_sweeper.py                  # 2.5-3 min on 2 cores
    .venv/bin/python benchmarks/bench_sweeper.py --official-venv  # + the official plugin's own stack

No assertions: it prints the figures and the ratio.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
N_SMALL, N_LARGE = 10, 110
OFFICIAL_PINS = ["hydra-optuna-sweeper==1.2.0", "hydra-core==1.3.8", "optuna==2.10.1", "sqlalchemy<2"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ecosplit-bench"

APP = '''import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return (float(cfg.x) - 1.0) ** 2 + (float(cfg.y) + 2.0) ** 2


if __name__ == "__main__":
    main()
'''
CONFIG = "x: 0.0\ny: 0.0\nhydra:\n  job:\n    chdir: false\n"
SEARCH = ["x=interval(-4.0, 4.0)", "y=interval(-4.0, 4.0)"]


@dataclass
class Sweeper:
    label: str
    python: str
    pythonpath: str
    overrides: list
    ours: bool = True
    seconds: dict = field(default_factory=dict)  # n_trials -> [wall seconds per repeat]
    cpu: dict = field(default_factory=dict)  # n_trials -> [CPU seconds per repeat]

    def marginal_ms(self, cpu: bool = False) -> list:
        s = self.cpu if cpu else self.seconds
        return [1000 * (b - a) / (N_LARGE - N_SMALL) for a, b in zip(s[N_SMALL], s[N_LARGE])]


def coexist_dir() -> Path | None:
    """Where `make install` put the official plugin (--no-deps) beside this venv."""
    for base in (Path(sys.prefix), REPO / ".venv"):
        if (base / "coexist" / "hydra_plugins" / "hydra_optuna_sweeper").is_dir():
            return base / "coexist"
    return None


def official_venv() -> Path:
    """A venv with the official plugin and the versions it pins, built once and cached."""
    venv = CACHE / "official-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if stamp.is_file() and stamp.read_text() == " ".join(OFFICIAL_PINS) and python.exists():
        return python
    print(f"building {venv} ({' '.join(OFFICIAL_PINS)}) ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *OFFICIAL_PINS], check=True)
    stamp.write_text(" ".join(OFFICIAL_PINS))
    return python


def versions(python: str, pythonpath: str) -> str:
    code = ("import importlib.metadata as m, optuna, hydra, sqlalchemy; "
            "print(f'optuna {optuna.__version__}, hydra-core {hydra.__version__}, sqlalchemy {sqlalchemy.__version__}')")
    p = subprocess.run([python, "-c", code], env=_env(pythonpath), capture_output=True, text=True)
    return p.stdout.strip() or p.stderr.strip().splitlines()[-1]


def _env(pythonpath: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOSPLIT_OPTUNA_")}
    env["PYTHONPATH"] = pythonpath
    env["HYDRA_FULL_ERROR"] = "1"
    return env


def run_once(sweeper: Sweeper, app_dir: Path, work: Path, n_trials: int, tag: str) -> tuple:
    """(wall seconds, CPU seconds) of one sweep of n_trials in a new process."""
    db = work / f"{tag}.db"
    args = [sweeper.python, str(app_dir / "app.py"), "-m", *sweeper.overrides, *SEARCH,
            f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.sampler.seed=0",
            f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.study_name=bench",
            f"hydra.sweep.dir={work / tag}"]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    p = subprocess.run(args, cwd=app_dir, env=_env(sweeper.pythonpath), capture_output=True, text=True)
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    if p.returncode != 0:
        raise SystemExit(f"{sweeper.label}, n_trials={n_trials}: exit {p.returncode}\n{(p.stdout + p.stderr)[-3000:]}")
    with sqlite3.connect(db) as con:  # plain SQL: Optuna 2 and 5 share this table
        done = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    if done != n_trials:
        raise SystemExit(f"{sweeper.label}: {done} COMPLETE trials, expected {n_trials}")
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median printed)")
    ap.add_argument("--ours", type=Path, default=REPO,
                    help="the checkout whose hydra_plugins/ is measured as ecosplit_optuna (e.g. an older commit's "
                         "`git archive`, for a before/after figure); default: this repo")
    ap.add_argument("--official-venv", action="store_true",
                    help="also run the official plugin on its own pinned stack (separate venv, cached)")
    args = ap.parse_args()

    ours = ["hydra/sweeper=ecosplit_optuna", "hydra.sweeper.sampler.multivariate=false"]
    sweepers = [Sweeper("ecosplit_optuna", sys.executable, str(args.ours.resolve()), ours),
                Sweeper("ecosplit_optuna, no WAL", sys.executable, str(args.ours.resolve()),
                        ours + ["hydra.sweeper.sqlite_wal=false"])]
    if (args.ours / "hydra_plugins" / "ecosplit_optuna_sweeper" / "launcher.py").exists():  # not in older checkouts
        sweepers.append(Sweeper("ecosplit_optuna + ecosplit launcher", sys.executable, str(args.ours.resolve()),
                                ours + ["hydra/launcher=ecosplit"]))
    coexist = coexist_dir()
    if coexist is not None:
        sweepers.append(Sweeper("official, Optuna 5", sys.executable, str(coexist), ["hydra/sweeper=optuna"], ours=False))
    else:
        print("hydra-optuna-sweeper is not in <venv>/coexist (`make install` puts it there): skipped")
    if args.official_venv:
        sweepers.append(Sweeper("official, own stack", str(official_venv()), "", ["hydra/sweeper=optuna"], ours=False))

    print(f"bench_sweeper: trivial Hydra app, TPE (seed 0, multivariate=false), SQLite in a temp dir, basic "
          f"launcher unless named; marginal cost per trial = (t{N_LARGE} - t{N_SMALL}) / {N_LARGE - N_SMALL}; "
          f"{args.repeats} interleaved repeats; {os.cpu_count()} cores")
    for s in sweepers:
        print(f"  {s.label:36s} {versions(s.python, s.pythonpath)}")
    print("load average before (1/5/15 min): " + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)

    base = Path(tempfile.mkdtemp(prefix="ecosplit-bench-sweeper-"))
    try:
        app_dir = base / "app"
        (app_dir / "conf").mkdir(parents=True)
        (app_dir / "app.py").write_text(APP)
        (app_dir / "conf" / "config.yaml").write_text(CONFIG)
        for r in range(args.repeats):
            for n in (N_SMALL, N_LARGE):
                order = sweepers[r % len(sweepers):] + sweepers[:r % len(sweepers)]  # take turns going first
                for s in order:
                    wall, cpu = run_once(s, app_dir, base, n, f"s{sweepers.index(s)}-n{n}-r{r}")
                    s.seconds.setdefault(n, []).append(wall)
                    s.cpu.setdefault(n, []).append(cpu)
            print(f"  repeat {r + 1}: " + "   ".join(f"{s.label} {s.marginal_ms()[-1]:.0f} ms" for s in sweepers),
                  flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("load average after (1/5/15 min): " + " ".join(f"{x:.2f}" for x in os.getloadavg()))

    print()
    print(f"{'sweeper':36s}  t{N_SMALL} (s)  t{N_LARGE} (s)   marginal ms/trial, median (repeats)")
    print(f"{'':36s} {'':17s}   wall                     CPU")
    for s in sweepers:
        print(f"{s.label:36s} {statistics.median(s.seconds[N_SMALL]):6.2f}  {statistics.median(s.seconds[N_LARGE]):7.2f}"
              f"   {_figures(s.marginal_ms())}   {_figures(s.marginal_ms(cpu=True))}".rstrip())
    for mine in (s for s in sweepers if s.ours):
        for theirs in (s for s in sweepers if not s.ours):
            print(f"{mine.label} / {theirs.label}: wall {_ratio(mine, theirs)}, CPU {_ratio(mine, theirs, cpu=True)}"
                  "   (target <= 1.00)")


def _figures(ms: list) -> str:
    return f"{statistics.median(ms):6.1f} ({', '.join(f'{m:.0f}' for m in ms)})".ljust(22)


def _ratio(a: Sweeper, b: Sweeper, cpu: bool = False) -> str:
    """Ratio of the medians, and per repeat (each repeat ran the two side by side)."""
    x, y = a.marginal_ms(cpu), b.marginal_ms(cpu)
    return (f"{statistics.median(x) / statistics.median(y):.2f}x "
            f"(per repeat {', '.join(f'{p / q:.2f}' for p, q in zip(x, y))})")


if __name__ == "__main__":
    main()
