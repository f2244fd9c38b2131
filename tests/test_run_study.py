"""benchmarks/run_study.sh, the study's driver, end to end on two of the sweep tests' cheapest tables
swept together ("alpha+beta"; beta's first cell is alpha's, so it runs once, under alpha's name):
both are recorded from the one pool, their runs are carried (while the sweep runs and after), and a
second session, whose sweep folder is new, restores them and runs nothing again, and a "more:" step
extends and records a table again. Checked against the sweep's own files: each recorded summary.csv
holds its table's runs, and the second session's sweep log reports every run cached."""

import csv
import os
import subprocess
import sys
from pathlib import Path

from tiny_spec import tiny_table

REPO = Path(__file__).resolve().parents[1]


def study(tmp_path: Path, sweep: Path, *groups: str) -> None:
    env = {**os.environ, "CODE": str(REPO), "RESULTS": str(tmp_path / "results"), "PY": sys.executable,
           "PRESET": "smoke", "DATASETS": "digits", "SEEDS": "2", "WORKERS": "2", "CARRY_EVERY": "2"}
    subprocess.run(["bash", str(REPO / "benchmarks" / "run_study.sh"), str(sweep), *groups], env=env, check=True,
                   timeout=600)


def recorded_runs(folder: Path) -> list[str]:
    with open(folder / "summary.csv", newline="") as f:
        return sorted(r["run"] for r in csv.DictReader(f))


def test_tables_joined_by_plus_are_swept_in_one_pool_recorded_each_and_carried(tmp_path):
    alpha, beta = tmp_path / "alpha.yaml", tmp_path / "beta.yaml"
    alpha.write_text(tiny_table("alpha"))
    beta.write_text(tiny_table("beta") + """  - setting: Adv. Defense=None (more data)
    set: {adversarial_defense: {objective: none}, data: {train_subset: 60}}
""")

    study(tmp_path, tmp_path / "first" / "sweep", f"{alpha}+{beta}")
    log = (tmp_path / "first" / "progress.log").read_text()
    assert f"start sweep {alpha} {beta}" in log and f"sweep {alpha} {beta} rc=0" in log
    assert "recorded alpha rc=0" in log and "recorded beta rc=0" in log
    # carried while the sweep ran (every 2 s here; its pool alone takes longer to start), then once more
    assert log.count("carried in") >= 2
    recorded = tmp_path / "results" / "smoke-digits"
    runs = {t: recorded_runs(recorded / t) for t in ("alpha", "beta")}
    assert len(runs["alpha"]) == 2 and len(runs["beta"]) == 4 and set(runs["alpha"]) < set(runs["beta"])
    run_md = (recorded / "alpha" / "RUN.md").read_text()
    assert (f"- command: `tradeoff sweep {alpha} {beta} --preset smoke --datasets digits --seeds 2 --workers 2 "
            "--out SWEEP`") in run_md
    carried = tmp_path / "results" / "in-progress" / "smoke-digits"
    assert sorted(p.name for p in carried.iterdir()) == runs["beta"]
    assert (tmp_path / "first" / "alpha+beta.log").is_file()

    # the next session: a new sweep folder, the same arguments; every run comes from the carried ones;
    # then alpha's more-seeds step (it has no with/without pair, so nothing to extend) and its record again
    study(tmp_path, tmp_path / "second" / "sweep", f"{alpha}+{beta}", f"more:{alpha}")
    log = (tmp_path / "second" / "progress.log").read_text()
    assert "4 run(s) restored" in log
    assert "6 run(s), 6 already done, 0 to run" in (tmp_path / "second" / "alpha+beta.log").read_text()
    assert "start more-seeds alpha" in log and "more-seeds alpha rc=0" in log and log.count("recorded alpha rc=0") == 2
    assert "No pair is inconclusive" in (tmp_path / "second" / "more-alpha.log").read_text()
    assert {t: recorded_runs(recorded / t) for t in ("alpha", "beta")} == runs
    run_md = (recorded / "alpha" / "RUN.md").read_text()
    assert (f"- command: `tradeoff sweep {alpha} --preset smoke --datasets digits --seeds 2 --workers 2 --out SWEEP, "
            "then tradeoff more-seeds SWEEP --tables alpha --run --workers 2`") in run_md
