"""``onebox data``: import and list dataset versions."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli.shared import console, settings

app = typer.Typer(help="Import and list datasets.", no_args_is_help=True)


@app.command("import")
def data_import(
    path: Annotated[Path, typer.Argument(help="Folder with one sub-folder of PNG/JPEG images per class.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name, e.g. 'parts'.")],
) -> None:
    """Import an image folder as a new, content-hashed dataset version."""
    from storage.datasets import import_image_folder

    current = settings()
    version = import_image_folder(path, name=name, settings=current)
    if current.runtime == "compose":
        from flows.deployments import register_all

        register_all(current)  # the run form's dataset list now offers it
    console.print(
        f"dataset [bold]{version.name}[/] version [bold]{version.version}[/]: {version.num_images} images, "
        f"{len(version.classes)} classes, stored as {'x'.join(map(str, version.image_shape))} "
        "(channels x height x width)"
    )


@app.command("list")
def data_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List every dataset version, newest first."""
    from storage.datasets import list_datasets

    versions = list_datasets(settings())
    if as_json:
        rows = [{**asdict(v), "path": str(v.path), "num_images": v.num_images} for v in versions]
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "version", "classes", "images", "shape", "created")
    for v in versions:
        table.add_row(
            v.name, v.version, str(len(v.classes)), str(v.num_images), "x".join(map(str, v.image_shape)), v.created
        )
    console.print(table if versions else "no datasets yet; `onebox train` imports the bundled digits on first use")
