"""``python -m flows``: the onebox command where its console script is not installed (the worker image)."""

from flows.cli import main

main()
