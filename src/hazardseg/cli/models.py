"""CLI command: ``hazardseg models`` lists the registered segmentation networks."""

from __future__ import annotations

import json

import typer


def _table(rows: list[dict[str, object]]) -> str:
    headers = ["name", "family", "params(M)", "aux", "feature_dim", "pretrained", "weights file"]
    body = [
        [
            str(r["name"]),
            str(r["family"]),
            f"{float(r['params_m']):.1f}",  # type: ignore[arg-type]
            "yes" if r["has_aux"] else "no",
            f"{r['feature_dim']} (stride {r['feature_stride']})",
            "yes" if r["pretrained_available"] else "no",
            str(r["pretrained_file"] or "-"),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(line.rstrip() for line in lines)


def models_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    num_classes: int = typer.Option(
        13, "--num-classes", min=1, help="Classes for the parameter count."
    ),
) -> None:
    """List registered models: family, parameters, aux head, feature dim, local ImageNet weights.

    "pretrained" = the backbone weights for pretrained='imagenet' are in the local cache.
    """
    from hazardseg.models import describe_model, list_models

    rows = [describe_model(name, num_classes=num_classes) for name in list_models()]
    typer.echo(json.dumps(rows, indent=2) if as_json else _table(rows))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("models")(models_command)
