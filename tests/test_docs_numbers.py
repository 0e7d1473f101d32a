"""Numbers in docs/ that come from a run match that run's results (benchmarks/docs_numbers.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location(
        "docs_numbers", ROOT / "benchmarks" / "docs_numbers.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_every_numbers_block_renders_from_its_snapshot():
    numbers = _module()
    found = []
    for page in numbers.docs_pages():
        for name, body, rendered in numbers.rendered_blocks(page.read_text(encoding="utf-8")):
            found.append(name)
            assert body == rendered, (
                f"{page.name}: the '{name}' block differs from docs/numbers/{name}.json; run "
                "`python benchmarks/docs_numbers.py --render`"
            )
    assert "demo_full" in found


def test_a_drifted_table_is_caught(tmp_path):
    """The check fails on a page whose numbers were edited by hand (or a stale snapshot)."""
    numbers = _module()
    page = (ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")
    ((name, _, _),) = [b for b in numbers.rendered_blocks(page) if b[0] == "demo_full"]
    snap = json.loads((ROOT / "docs" / "numbers" / "demo_full.json").read_text())
    knn = snap["methods"]["knn"]["pooled"]["auroc"]
    edited = page.replace(f"| knn | {100 * knn:.2f} |", "| knn | 91.85 |")
    assert edited != page
    ((_, body2, rendered2),) = [b for b in numbers.rendered_blocks(edited) if b[0] == name]
    assert body2 != rendered2


def test_snapshot_matches_a_results_file_it_was_taken_from(tmp_path):
    numbers = _module()
    results = json.loads(
        json.dumps(
            {
                "created": "x",
                "data": {"split": "test", "num_images": 2, "resize": "native"},
                "segmentation": {"miou": 0.5},
                "evaluation": {"fit_images": 3},
                "methods": {
                    "msp": {
                        "pooled": {"auroc": 0.8, "aupr": 0.1, "fpr95": 0.4},
                        "per_image": {
                            "auroc": 0.7,
                            "aupr": 0.2,
                            "fpr95": 0.5,
                            "num_images": 1,
                            "num_skipped": 1,
                        },
                        "components": None,
                        "oracle": {"f1": 0.3},
                        "calibrated": None,
                    }
                },
            }
        )
    )
    snap = numbers.snapshot_demo(results, "r.json")
    table = numbers.render_demo(snap)
    assert "| msp | 80.00 | 10.00 | 40.00 | 70.00 | 20.00 | 50.00 | - (none) | 30.00 | - |" in table
    with pytest.raises(KeyError):
        numbers.snapshot_demo({"methods": {}}, "r.json")
