"""Operations a researcher starts from the Prefect UI, next to training: rolling production back."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows import promote
from storage.settings import get_settings


@flow(name="rollback", log_prints=True, retries=0)
def rollback_production() -> str:
    """Serve the previous production version again and point `production` back at it."""
    settings = get_settings()
    version, url = promote.rollback(settings)
    print(f"{settings.model_name} v{version} serves at {url} and is production again")
    create_markdown_artifact(
        key="rollback",
        markdown=f"# Rolled back\n\n**{settings.model_name} v{version}** is production again, serving at {url}/.",
        description=f"{settings.model_name} v{version} is production again",
    )
    return version
