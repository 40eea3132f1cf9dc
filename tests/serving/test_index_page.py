"""The index of served models as HTML and data, without a server (the gateway writes the same page)."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace

from serving.index_page import index_entries, render_index
from serving.metadata import ModelMetadata

DIGITS = ModelMetadata(
    model_name="digits",
    model_version="4",
    run_id="r1",
    dataset_name="digits",
    dataset_version="2",
    classes=tuple(str(d) for d in range(10)),
    image_shape=(1, 8, 8),
    metrics={"test_accuracy": 0.9712},
    trained="2026-12-01T21:30:05+01:00",
)
PETS = replace(DIGITS, model_name="pets", model_version="1", dataset_name="pets", classes=("cat", "dog"), metrics={})


def test_both_models_in_order_with_links_and_the_default_marked() -> None:
    page = render_index([DIGITS, PETS], default="pets")
    rows = re.findall(r"<tr>.*?</tr>", page, re.S)[1:]
    assert len(rows) == 2
    assert '<a href="/models/digits/">digits</a>' in rows[0]
    assert "97.12%" in rows[0]
    assert "2026-12-01 20:30 UTC" in rows[0]  # trained, in UTC
    assert "digits:2" in rows[0]
    assert 'class="default"' not in rows[0]
    assert '<a href="/models/pets/">pets</a>' in rows[1]
    assert 'class="default"' in rows[1]


def test_nothing_from_elsewhere_and_no_script() -> None:
    page = render_index([DIGITS, PETS], default="digits")
    assert "<script" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)


def test_a_bundle_from_before_and_a_model_without_accuracy() -> None:
    old = replace(DIGITS, trained="", metrics={})
    (entry,) = index_entries([old], default=None)
    assert entry["trained"] == ""
    assert entry["test_accuracy"] is None
    assert entry["default"] is False
    assert "unknown" in render_index([old], default=None)


def test_names_are_escaped() -> None:
    odd = replace(DIGITS, model_name="<b>x</b>", dataset_name="a&b")
    page = render_index([odd], default=None)
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "a&amp;b:2" in page


def test_no_model_served_yet() -> None:
    page = render_index([], default=None)
    assert "No model is served yet" in page
    assert "<table" not in page


def test_entries_carry_what_the_table_shows() -> None:
    (digits, pets) = index_entries([DIGITS, PETS], default="digits")
    assert digits == {
        "name": "digits",
        "version": "4",
        "dataset": "digits:2",
        "test_accuracy": 0.9712,
        "trained": "2026-12-01T21:30:05+01:00",
        "classes": 10,
        "image_shape": [1, 8, 8],
        "default": True,
        "url": "/models/digits/",
    }
    assert pets["default"] is False


def test_rendering_imports_neither_bentoml_nor_onnxruntime() -> None:
    code = "import sys, serving.index_page; print(sorted({'bentoml', 'onnxruntime'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_metadata_of_a_newer_bundle_is_read(tmp_path) -> None:
    import json

    path = tmp_path / "metadata.json"
    DIGITS.write(path)
    path.write_text(json.dumps({**json.loads(path.read_text()), "architecture": "resnet18"}))
    assert ModelMetadata.read(path) == DIGITS


def test_with_the_labeling_page_each_row_links_it() -> None:
    page = render_index([DIGITS, PETS], default="digits", labeling=True)
    rows = re.findall(r"<tr>.*?</tr>", page, re.S)
    assert "<th>Labeling</th>" in rows[0]
    assert '<a href="/label/digits/">label images</a>' in rows[1]
    assert '<a href="/label/pets/">label images</a>' in rows[2]
    assert "Labeling" not in render_index([DIGITS], default="digits")
