"""Did a change make anything slower? The quick demo, stage by stage, at two git revisions.

Each revision's ``src/`` is exported with ``git archive`` into a temporary folder and run with
``PYTHONPATH`` pointing at it (same virtual environment, same data, same seeds). Runs alternate
(old, new, old, new, ...) so machine load hits both alike; the table gives the median seconds of
every demo stage (data, train, calibrate, evaluate, compare, visualize, report) and the
new / old ratio (> 1: the new revision is slower). The demo's metrics must be identical at both
revisions (the demo is deterministic); the script says so or fails.

    python benchmarks/bench_revisions.py --old a22dfc7 --new HEAD --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def export(rev: str, dest: Path) -> str:
    """Write ``rev``'s ``src/`` under ``dest``; return the full commit hash."""
    sha = subprocess.run(
        ["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", sha, "src"], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return sha


DRIVER = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[3]))
try:
    from hazardseg.workflows.demo import run_demo
except ImportError:  # revisions before the workflows/ package
    from hazardseg.demo import run_demo
t = time.perf_counter()
summary = run_demo(Path(sys.argv[1]), quick=True, overwrite=True, say=lambda _: None)
out = {"wall_s": time.perf_counter() - t, "stages": summary["stages"],
       "miou": summary["miou"], "methods": summary["methods"]}
Path(sys.argv[2]).write_text(json.dumps(out))
"""


def run_once(src: Path, work: Path, threads: int) -> dict[str, Any]:
    """One quick demo with the code under ``src``; its stage times and metrics."""
    result = work / "result.json"
    env = {**os.environ, "PYTHONPATH": str(src / "src")}
    subprocess.run(
        [sys.executable, "-c", DRIVER, str(work / "demo"), str(result), str(threads)],
        env=env,
        check=True,
        cwd=work,
    )
    return json.loads(result.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="git revision (e.g. a tag or commit)")
    ap.add_argument("--new", default="HEAD")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hazardseg-revs-") as tmp:
        root = Path(tmp)
        shas = {k: export(getattr(args, k), root / k) for k in ("old", "new")}
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        load = [os.getloadavg()[0]]
        for r in range(args.rounds):
            for key in ("old", "new"):
                work = root / f"{key}-run{r}"
                work.mkdir()
                runs[key].append(run_once(root / key, work, args.threads))
                print(f"round {r + 1} {key}: {runs[key][-1]['wall_s']:.1f} s", flush=True)
        load.append(os.getloadavg()[0])
    same = all(
        json.dumps([x["miou"], x["methods"]], sort_keys=True)
        == json.dumps([runs["old"][0]["miou"], runs["old"][0]["methods"]], sort_keys=True)
        for x in runs["old"] + runs["new"]
    )
    stages = list(runs["old"][0]["stages"])
    rows = []
    for stage in [*stages, "wall"]:

        def med(key: str, stage: str = stage) -> float:
            pick = (lambda x: x["wall_s"]) if stage == "wall" else (lambda x: x["stages"][stage])
            return statistics.median(pick(x) for x in runs[key])

        old, new = med("old"), med("new")
        rows.append({"stage": stage, "old_s": old, "new_s": new, "ratio": new / old})
    print(
        f"\nold {shas['old'][:10]}  new {shas['new'][:10]}  rounds {args.rounds}  "
        f"threads {args.threads}  {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load {load[0]:.2f} -> {load[1]:.2f}"
    )
    print("| stage | old s | new s | new / old |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['stage']} | {row['old_s']:.2f} | {row['new_s']:.2f} | {row['ratio']:.3f} |")
    print(f"metrics identical at both revisions: {same}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {"shas": shas, "rows": rows, "runs": runs, "identical": same, "load": load},
                indent=1,
            )
        )
    if not same:
        sys.exit("the demo's metrics differ between the revisions")


if __name__ == "__main__":
    main()
