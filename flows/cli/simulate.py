"""``onebox simulate``: send production-like traffic, with drift if asked, to a served model."""

from __future__ import annotations

from typing import Annotated, cast

import typer

from flows.cli.shared import console, settings
from flows.perturbations import DRIFT_KINDS, DriftKind

app = typer.Typer()


def _drift_kind(value: str) -> str:
    if value not in DRIFT_KINDS:
        raise typer.BadParameter(f"{value!r} is not a drift kind; choose one of {', '.join(DRIFT_KINDS)}")
    return value


@app.command()
def simulate(
    model: Annotated[str, typer.Option("--model", "-m", help="The served model to send traffic to.")],
    drift: Annotated[
        str,
        typer.Option(
            "--drift",
            help=f"How production's images differ from the training data: {', '.join(DRIFT_KINDS)}.",
            callback=_drift_kind,
        ),
    ] = "none",
    count: Annotated[int, typer.Option("--count", "-n", help="Images to send.", min=1, max=100_000)] = 200,
    seed: Annotated[int | None, typer.Option("--seed", help="Fixes which images are sent and how they change.")] = None,
) -> None:
    """Send held-out images of the model's own dataset version as PNG uploads to its /predict, then sum up."""
    import numpy as np

    from flows.simulate import held_out_images, send_traffic, served_model

    current = settings()
    state = served_model(current, model)
    held_out = held_out_images(current, state.model_name, state.model_version)
    console.print(
        f"sending {count} of {len(held_out.labels)} held-out images of {held_out.dataset} "
        f"(drift: {drift}) to {state.url}/predict",
        highlight=False,
    )

    def progress(sent: int) -> None:
        if sent % 500 == 0 and sent < count:
            console.print(f"  {sent}/{count} sent", highlight=False)

    summary = send_traffic(
        state,
        held_out,
        drift=cast(DriftKind, drift),
        count=count,
        rng=np.random.default_rng(seed),
        progress=progress,
        api_key=current.api_key_value,
    )
    console.print(summary.line(), highlight=False)
    if summary.answered == 0:
        raise typer.Exit(1)
