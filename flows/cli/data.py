"""``onebox data``: import and list dataset versions."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table

from flows.cli.shared import console, errors, settings
from storage.errors import ParameterError

app = typer.Typer(help="Import and list datasets.", no_args_is_help=True)


LOG_EVERY = 1000  # images between progress lines when the output is not a terminal
PHASES = {"scan": "hashing and reading headers", "convert": "converting and storing"}


@contextlib.contextmanager
def import_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on a terminal; in logs, a line every LOG_EVERY images and at each phase's end."""
    if not console.is_terminal:

        def log(phase: str, done: int, total: int) -> None:
            if done % LOG_EVERY == 0 or done == total:
                print(f"{PHASES[phase]}: {done}/{total} images", flush=True)

        yield log
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def show(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(PHASES[phase], total=total)
            bar.update(tasks[phase], completed=done)

        yield show


@app.command("import")
def data_import(
    path: Annotated[Path, typer.Argument(help="Folder with one sub-folder of PNG/JPEG images per class.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name, e.g. 'parts'.")],
    image_size: Annotated[
        str | None,
        typer.Option(
            "--image-size",
            help="Training resolution, N or HxW (e.g. 224 or 96x128). Default: the most common size, "
            "at most 64 pixels a side.",
        ),
    ] = None,
    resize: Annotated[
        str | None,
        typer.Option(
            "--resize",
            help="How photos of another shape are fitted: stretch (default), crop (short side, then the "
            "centre) or pad (letterbox).",
        ),
    ] = None,
    skip_bad: Annotated[
        bool,
        typer.Option("--skip-bad", help="Leave out unreadable files (listed) instead of refusing the folder."),
    ] = False,
) -> None:
    """Import an image folder as a new, content-hashed dataset version (streamed, image by image)."""
    from storage.datasets import import_image_folder
    from storage.images import RESIZE_POLICIES, Resize, parse_image_size

    if resize is not None and resize not in RESIZE_POLICIES:
        raise ParameterError(f"--resize {resize!r} is unknown; use one of {', '.join(RESIZE_POLICIES)}")
    size = parse_image_size(image_size) if image_size is not None else None
    current = settings()
    with import_progress() as progress:
        version = import_image_folder(
            path,
            name=name,
            settings=current,
            image_size=size,
            resize=cast(Resize | None, resize),
            skip_bad=skip_bad,
            progress=progress,
        )
    if version.skipped:
        errors.print(f"skipped {version.skipped} unreadable file(s):", highlight=False)
        for line in version.skipped_files():
            errors.print(f"  {line}", highlight=False, markup=False)
    if current.runtime == "compose":
        from flows.deployments import register_all

        register_all(current)  # the run form's dataset list now offers it
    console.print(
        f"dataset [bold]{version.name}[/] version [bold]{version.version}[/]: {version.num_images} images, "
        f"{len(version.classes)} classes, stored as {'x'.join(map(str, version.image_shape))} "
        f"(channels x height x width, {version.resize})"
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
    table = Table("name", "version", "classes", "images", "shape", "resize", "created")
    for v in versions:
        table.add_row(
            v.name,
            v.version,
            str(len(v.classes)),
            str(v.num_images),
            "x".join(map(str, v.image_shape)),
            v.resize,
            v.created,
        )
    console.print(table if versions else "no datasets yet; `onebox train` imports the bundled digits on first use")


@app.command("merge-inbox")
def data_merge_inbox(
    model: Annotated[
        str | None,
        typer.Option("--model", help="The model whose labeled inbox images to merge; default: the only one."),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who labeled them, for the lineage; default: $USER.")] = None,
) -> None:
    """Add the labeled inbox images to the model's dataset as a new version (and ask for a retrain)."""
    import getpass

    from flows.dataset_events import announce_new_version
    from storage.inbox_merge import merge_inbox
    from storage.registry import resolve_model

    current = settings()
    name = resolve_model(current, model)
    with import_progress() as progress:
        result = merge_inbox(current, name, by=by or getpass.getuser(), progress=progress)
    version = result.version
    console.print(
        f"dataset [bold]{version.name}[/] version [bold]{version.version}[/]: {version.num_images} images, "
        f"{result.parent.version} plus {result.merged} labeled from the inbox of model {name} "
        f"(batch {result.batch}; {result.left} left there)"
    )
    announcement = announce_new_version(current, result)
    (console if announcement.sent else errors).print(announcement.message, highlight=False)
