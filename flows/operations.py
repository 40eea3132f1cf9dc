"""Operations a researcher starts from the Prefect UI, next to training: rolling a model back."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import AfterValidator, Field

from flows import promote
from flows.parameters import check_model_name
from storage.registry import resolve_model
from storage.settings import get_settings


@flow(name="rollback", log_prints=True, retries=0, validate_parameters=True)
def rollback_production(
    model: Annotated[
        str | None,
        AfterValidator(check_model_name),
        Field(title="Model name", description="The model to roll back; empty: the only model there is."),
    ] = None,
    version: Annotated[
        str | None,
        Field(title="Version", description="Any registered version; empty: the one production named before."),
    ] = None,
) -> str:
    """Serve an earlier version of one model again and point its `production` back at it; other models stay."""
    settings = get_settings()
    name = resolve_model(settings, model)
    rolled_to, url = promote.rollback(settings, name, to=version or None)
    print(f"{name} v{rolled_to} serves at {url} and is production again")
    create_markdown_artifact(
        key="rollback",
        markdown=f"# Rolled back\n\n**{name} v{rolled_to}** is production again, serving at {url}/.",
        description=f"{name} v{rolled_to} is production again",
    )
    return rolled_to
