"""The index of served models (a stand-in: helper "serve" writes the real page; this one keeps
the same signatures so the appliance's gateway can publish it until the branches merge)."""

from __future__ import annotations

from html import escape
from typing import Any

from serving.metadata import ModelMetadata


def model_path(model_name: str) -> str:
    """The path of a model's own Swagger page (its routes live under it)."""
    return f"/models/{model_name}/"


def index_entries(models: list[ModelMetadata], *, default: str | None) -> list[dict[str, Any]]:
    """The index as data (``/index.json``): one entry per model, in the order given."""
    return [
        {
            "name": meta.model_name,
            "version": meta.model_version,
            "dataset": f"{meta.dataset_name}:{meta.dataset_version}",
            "test_accuracy": meta.metrics.get("test_accuracy"),
            "classes": len(meta.classes),
            "image_shape": list(meta.image_shape),
            "default": meta.model_name == default,
            "url": model_path(meta.model_name),
        }
        for meta in models
    ]


def render_index(models: list[ModelMetadata], *, default: str | None) -> str:
    """The HTML index of ``models`` (in that order); ``default`` is the one ``/predict`` answers for."""
    rows = "\n".join(
        f'<tr><td><a href="{escape(e["url"])}">{escape(e["name"])}</a>{" (default)" if e["default"] else ""}</td>'
        f"<td>{escape(e['version'])}</td><td>{escape(e['dataset'])}</td></tr>"
        for e in index_entries(models, default=default)
    )
    body = (
        f"<table><tr><th>Model</th><th>Version</th><th>Dataset</th></tr>\n{rows}\n</table>"
        if models
        else "<p>No model is served yet. Train one with <code>onebox train</code>.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>onebox: served models</title></head>'
        f"<body><h1>Served models</h1>\n{body}\n</body></html>\n"
    )
