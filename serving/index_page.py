"""The index of served models that stakeholders open first: a table with a link to each model's page.

Plain string building, no BentoML or ONNX Runtime: the model server renders it at ``/`` and the
appliance writes the same page as a static file into the nginx gateway. The page holds no
script, font or stylesheet from elsewhere, and reads the same without JavaScript.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from serving.metadata import ModelMetadata


def model_path(model_name: str) -> str:
    """The path of a model's own Swagger page (its routes live under it)."""
    return f"/models/{model_name}/"


def labeling_path(model_name: str) -> str:
    """The path of a model's labeling page (serving/labeling.py), which the gateway forwards."""
    return f"/label/{model_name}/"


def index_entries(models: list[ModelMetadata], *, default: str | None, labeling: bool = False) -> list[dict[str, Any]]:
    """The index as data (``/index.json``): one entry per model, in the order given; with
    ``labeling`` (the appliance runs the labeling page) each links its labeling page too."""
    return [
        {
            "name": meta.model_name,
            "version": meta.model_version,
            "dataset": f"{meta.dataset_name}:{meta.dataset_version}",
            "test_accuracy": meta.metrics.get("test_accuracy"),
            "trained": meta.trained,
            "classes": len(meta.classes),
            "image_shape": list(meta.image_shape),
            "default": meta.model_name == default,
            "url": model_path(meta.model_name),
            **({"labeling_url": labeling_path(meta.model_name)} if labeling else {}),
        }
        for meta in models
    ]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #1b1b1b; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .5rem .75rem; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.default { font-size: .8rem; background: #e3f0e3; color: #1d5b1d; border-radius: .25rem; padding: .1rem .4rem; }
p.hint { color: #555; }
"""


def _when(timestamp: str) -> str:
    """An ISO timestamp as people read it, in UTC: ``2026-12-01 20:00 UTC``."""
    if not timestamp:
        return "unknown"
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M")


def _row(entry: dict[str, Any]) -> str:
    accuracy = entry["test_accuracy"]
    name = escape(entry["name"])
    badge = ' <span class="default" title="/predict answers for this model">default</span>' if entry["default"] else ""
    cells = [
        f'<a href="{escape(entry["url"])}">{name}</a>{badge}',
        escape(entry["version"]),
        escape(entry["dataset"]),
        "" if accuracy is None else f"{accuracy:.2%}",
        escape(_when(entry["trained"])),
    ]
    classes: tuple[str, ...] = ("name", "version", "dataset", "number", "trained")
    if "labeling_url" in entry:
        cells.append(f'<a href="{escape(entry["labeling_url"])}">label images</a>')
        classes += ("labeling",)
    return "<tr>" + "".join(f'<td class="{c}">{cell}</td>' for c, cell in zip(classes, cells, strict=True)) + "</tr>"


def render_index(models: list[ModelMetadata], *, default: str | None, labeling: bool = False) -> str:
    """The HTML index of ``models`` (in that order); ``default`` is marked as the one ``/predict`` answers for;
    with ``labeling``, each row links the model's labeling page."""
    entries = index_entries(models, default=default, labeling=labeling)
    rows = "\n".join(_row(entry) for entry in entries)
    heads = ["Model", "Version", "Dataset", "Test accuracy", "Trained", *(["Labeling"] if labeling else [])]
    head = "".join(f"<th>{name}</th>" for name in heads)
    body = (
        f"""<table>
<thead><tr>{head}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
<p class="hint">Open a model to upload an image and see its answer. <code>POST /models/NAME/predict</code>
classifies one image; <code>/predict</code> answers for the default model.</p>"""
        if entries
        else "<p>No model is served yet. Train one with <code>onebox train</code>.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>onebox: served models</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Served models</h1>
{body}
</body>
</html>
"""
