"""No pinned MLflow, BentoML, Prefect or Pillow version has a vulnerability the project lists."""

from __future__ import annotations

import tomllib

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from serving.checkout import COMPOSE_DIR, SOURCE_ROOT

TABLE = COMPOSE_DIR / "known-vulnerabilities.toml"
WATCHED = {"mlflow", "bentoml", "prefect", "pillow"}


def listed() -> list[dict[str, str]]:
    return list(tomllib.loads(TABLE.read_text())["vulnerability"])


def pinned() -> dict[str, Version]:
    lock = tomllib.loads((SOURCE_ROOT / "uv.lock").read_text())
    return {p["name"]: Version(p["version"]) for p in lock["package"] if p["name"] in WATCHED}


def affecting(versions: dict[str, Version]) -> list[str]:
    """Each listed vulnerability a version in ``versions`` falls in, as "package version: id (summary)"."""
    return [
        f"{row['package']} {versions[row['package']]}: {row['id']} ({row['summary']})"
        for row in listed()
        if row["package"] in versions and SpecifierSet(row["affected"]).contains(versions[row["package"]])
    ]


def test_the_table_names_watched_packages_with_valid_ranges() -> None:
    rows = listed()
    assert {row["package"] for row in rows} == WATCHED  # every watched package has a row
    for row in rows:
        assert row["id"].startswith(("CVE-", "GHSA-")), row
        assert row["summary"], row
        SpecifierSet(row["affected"])  # raises on a range that is not PEP 440


def test_every_watched_package_is_pinned_in_the_lock_file() -> None:
    assert set(pinned()) == WATCHED


def test_no_pinned_version_has_a_listed_vulnerability() -> None:
    found = affecting(pinned())
    assert not found, "upgrade past: " + "; ".join(found)


@pytest.mark.parametrize(
    ("package", "version", "expected"),
    [
        ("pillow", "10.1.0", "CVE-2023-50447"),
        ("bentoml", "1.4.2", "CVE-2025-27520"),
        ("prefect", "3.0.2", "CVE-2024-8183"),
    ],
)
def test_a_version_in_a_listed_range_is_caught(package: str, version: str, expected: str) -> None:
    assert any(expected in line for line in affecting({package: Version(version)}))
