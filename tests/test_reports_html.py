"""Figures render, and `hazardseg report` writes one self-contained HTML page."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hazardseg.cli import main
from hazardseg.errors import DataError
from hazardseg.reports import plots
from hazardseg.reports.html import build_report, build_report_html
from hazardseg.run_folder import read_metric_rows
from test_reports_tables import curves_for, make_results, write


class PageParser(HTMLParser):
    """Collects every src/href and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> PageParser:
    p = PageParser()
    p.feed(page)
    p.close()
    return p


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def metrics_rows() -> list[dict]:
    rows = []
    for epoch in range(1, 4):
        for it in range(3):
            rows.append(
                {
                    "kind": "train",
                    "epoch": epoch,
                    "iteration": epoch * 3 + it,
                    "loss": 2.0 / epoch + 0.1 * it,
                    "lr": 1e-4,
                }
            )
        rows.append(
            {
                "kind": "val",
                "epoch": epoch,
                "iteration": epoch * 3 + 2,
                "miou": 0.1 * epoch,
                "pixel_accuracy": 0.5,
                "iou": {"road": 0.3 * epoch, "car": 0.05 * epoch, "pole": None},
            }
        )
    return rows


def make_run(root: Path, evaluated: bool = True) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: demo <run>\nmodel:\n  name: lraspp_mobilenet_v3\n")
    lines = [json.dumps(r) for r in metrics_rows()]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"kind": "tra')  # partial last line
    if evaluated:
        write(run / "eval" / "test" / "results.json", make_results())
        (run / "visualize").mkdir()
        rgb = np.zeros((24, 32, 3), dtype=np.uint8)
        rgb[:, :16] = (255, 0, 0)
        Image.fromarray(rgb).save(run / "visualize" / "sample_0001.png")
        Image.fromarray(rgb[::-1]).save(run / "eval" / "test" / "extra_figure.png")
    return run


def test_plot_functions_render_expected_sizes(tmp_path: Path) -> None:
    curves, _, _ = curves_for(0)
    cases = {
        "roc": (
            plots.plot_roc_pr({"msp": curves}, "t", {"msp": {"auroc": 0.9, "aupr": 0.1}}),
            (1000, 440),
        ),
        "bars": (
            plots.plot_grouped_bars({"auroc": {"msp": {"a": 0.9, "b": None}}}, ["auroc"]),
            (600, 420),
        ),
        "iou": (plots.plot_iou_bars({"road": 0.9, "car": None, "pole": 0.1}), (650, 216)),
        "train": (plots.plot_training_curves(metrics_rows()), (1000, 380)),
        "empty": (plots.plot_training_curves([]), (1000, 380)),
        "sens": (
            plots.plot_sensitivity(
                [0.1, 0.5, 0.9],
                [0.2, 0.5, 0.3],
                [0.1, 0.4, 0.8],
                [0.9, 0.6, 0.2],
                calibrated=0.4,
                oracle=0.5,
            ),
            (700, 420),
        ),
    }
    for name, (fig, size) in cases.items():
        path = plots.save_figure(fig, tmp_path / f"{name}.png")
        assert path.stat().st_size > 1000
        with Image.open(path) as im:
            assert im.size == size, name
            assert len(set(np.asarray(im.convert("L")).ravel().tolist())) > 2  # not blank
    assert png_size(plots.figure_png(plots.plot_iou_bars({"road": 0.5}))) == (650, 216)
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_full_run_is_self_contained(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    path = build_report(run)
    assert path == run / "report.html"
    page = path.read_text(encoding="utf-8")
    parsed = parse(page)
    assert parsed.tags[0] == "html"
    assert parsed.links and all(link.startswith("data:image/png;base64,") for link in parsed.links)
    sizes = [png_size(base64.b64decode(link.split(",", 1)[1])) for link in parsed.links]
    assert (32, 24) in sizes  # the visualize panel, embedded unchanged
    assert (1000, 380) in sizes and (1000, 440) in sizes  # training curves, ROC/PR
    text = " ".join(parsed.text)
    for expected in (
        "Training",
        "Evaluation: test split",
        "max_logit",
        "Per image",
        "Component level",
        "sample_0001.png",
        "extra_figure.png",
        "name: demo <run>",
        "1 unreadable line",
    ):
        assert expected in text, expected
    assert "<strong>90.50</strong>" in page  # best pooled AUROC in bold
    assert "No evaluation yet" not in text


def test_report_training_only_says_so(tmp_path: Path) -> None:
    run = make_run(tmp_path, evaluated=False)
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    parsed = parse(out.read_text(encoding="utf-8"))
    text = " ".join(parsed.text)
    assert "No evaluation yet" in text
    assert "best validation mIoU 30.00%" in text
    assert all(link.startswith("data:") for link in parsed.links)
    assert not (run / "report.html").exists()


def test_report_eval_only_and_errors(tmp_path: Path) -> None:
    run = tmp_path / "evalonly"
    write(run / "eval" / "validation" / "results.json", make_results(split="validation"))
    text = " ".join(parse(build_report_html(run)).text)
    assert "No training log" in text and "validation split" in text
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a run directory"):
        build_report(tmp_path / "empty")
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_read_metrics_jsonl_skips_partial_lines(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"kind": "val", "miou": 0.5}\n\n[1, 2]\n{"kind": "tr')
    read = read_metric_rows(p)
    assert read.rows == [{"kind": "val", "miou": 0.5}] and read.skipped == 2
