"""Numbers in docs/ that come from a run, regenerated from that run's results.

A block in a docs page between ``<!-- numbers:NAME -->`` and ``<!-- /numbers:NAME -->`` is
rendered from ``docs/numbers/NAME.json``, a snapshot of the run's results.json (the fields
the block shows). ``tests/test_docs_numbers.py`` renders every block from its snapshot and
fails when the page differs, so a table cannot drift from the run it quotes.

    # after `hazardseg demo` (full): take its numbers, rewrite the block
    python benchmarks/docs_numbers.py demo_full --results hazardseg-demo/run/eval/test/results.json
    # re-render every block from the stored snapshots
    python benchmarks/docs_numbers.py --render
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NUMBERS = ROOT / "docs" / "numbers"
BLOCK = re.compile(
    r"(<!-- numbers:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /numbers:(?P=name) -->)", re.S
)


def _pct(v: Any) -> str:
    return "-" if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.2f}"


def snapshot_demo(results: dict[str, Any], source: str) -> dict[str, Any]:
    """The fields of a demo's test results.json that the docs table shows."""
    methods = {}
    for name, m in results["methods"].items():
        comp = m.get("components") or {}
        methods[name] = {
            "pooled": {k: m["pooled"][k] for k in ("auroc", "aupr", "fpr95")},
            "per_image": {k: m["per_image"][k] for k in ("auroc", "aupr", "fpr95")},
            "per_image_images": m["per_image"]["num_images"],
            "per_image_skipped": m["per_image"]["num_skipped"],
            "components_mean_f1": comp.get("mean_f1"),
            "components_threshold": comp.get("threshold_source"),
            "oracle_f1": (m.get("oracle") or {}).get("f1"),
            "calibrated_f1": (m.get("calibrated") or {}).get("f1"),
        }
    return {
        "source": source,
        "created": results.get("created"),
        "hazardseg_version": results.get("hazardseg_version"),
        "split": results["data"]["split"],
        "num_images": results["data"]["num_images"],
        "resize": results["data"]["resize"],
        "test_miou": results["segmentation"]["miou"],
        "fit_images": (results.get("evaluation") or {}).get("fit_images"),
        "methods": methods,
    }


def render_demo(snap: dict[str, Any]) -> str:
    """The docs table of a full demo run."""
    lines = [
        f"Test split, {snap['num_images']} images, evaluated at resize {snap['resize']} (labels "
        f"at their own resolution), fitted methods on {snap['fit_images']} training images; "
        f"test mIoU {_pct(snap['test_miou'])}. Results file of {snap['created']}.",
        "",
        "| method | pooled AUROC | AUPR | FPR95 | per-image AUROC | AUPR | FPR95 | "
        "components mean F1 (threshold) | F1 at oracle threshold | F1 at calibrated threshold |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in snap["methods"].items():
        p, q = m["pooled"], m["per_image"]
        source = m["components_threshold"] or "none"
        lines.append(
            f"| {name} | {_pct(p['auroc'])} | {_pct(p['aupr'])} | {_pct(p['fpr95'])} | "
            f"{_pct(q['auroc'])} | {_pct(q['aupr'])} | {_pct(q['fpr95'])} | "
            f"{_pct(m['components_mean_f1'])} ({source}) | {_pct(m['oracle_f1'])} | "
            f"{_pct(m['calibrated_f1'])} |"
        )
    first = next(iter(snap["methods"].values()))
    lines += [
        "",
        f"Per-image numbers average over the {first['per_image_images']} test images that contain "
        f'both anomaly and normal pixels ({first["per_image_skipped"]} skipped). "oracle" uses '
        'the best-F1 threshold found on the test split itself (an upper bound); "calibrated" '
        "the threshold chosen on validation data only (5% FPR of known pixels).",
    ]
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, tuple[Callable[[dict[str, Any]], str], Callable[..., dict[str, Any]]]] = {
    "demo_full": (render_demo, snapshot_demo),
}
"""Block name -> (render a snapshot, make a snapshot from a results.json)."""


def docs_pages() -> list[Path]:
    """Every page that may hold a numbers block."""
    return [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def rendered_blocks(text: str) -> list[tuple[str, str, str]]:
    """(name, body on the page, body rendered from the snapshot) of every block in ``text``."""
    out = []
    for m in BLOCK.finditer(text):
        name = m.group("name")
        render, _ = RENDERERS[name]
        snap = json.loads((NUMBERS / f"{name}.json").read_text(encoding="utf-8"))
        out.append((name, m.group("body"), render(snap)))
    return out


def render_pages() -> list[Path]:
    """Rewrite every block from its snapshot; return the pages changed."""
    changed = []
    for page in docs_pages():
        text = page.read_text(encoding="utf-8")

        def sub(m: re.Match[str]) -> str:
            render, _ = RENDERERS[m.group("name")]
            snap = json.loads((NUMBERS / f"{m.group('name')}.json").read_text(encoding="utf-8"))
            return m.group(1) + render(snap) + m.group(4)

        new = BLOCK.sub(sub, text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed.append(page)
    return changed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", choices=sorted(RENDERERS), help="block to take from a run")
    ap.add_argument("--results", type=Path, help="the run's results.json")
    ap.add_argument("--render", action="store_true", help="only re-render every block")
    args = ap.parse_args()
    if args.name is not None:
        if args.results is None:
            ap.error("give --results FILE with a block name")
        results = json.loads(args.results.read_text(encoding="utf-8"))
        _, snapshot = RENDERERS[args.name]
        NUMBERS.mkdir(parents=True, exist_ok=True)
        snap = snapshot(results, str(args.results))
        (NUMBERS / f"{args.name}.json").write_text(json.dumps(snap, indent=1) + "\n")
    elif not args.render:
        ap.error("give a block name with --results, or --render")
    for page in render_pages():
        print(f"updated {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
