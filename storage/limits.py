"""How much one input may cost: the limits every entry point checks before it spends memory.

A 68-byte PNG can declare 30000x30000 pixels and a 657 KB one 13000x13000 (1.45 GB decoded);
a JSON batch of 123 MB took a worker to 2.3 GB while it was parsed. So the image's declared size
is checked from its header, and a request's size from its Content-Length (and while it streams),
before anything is decoded or parsed.

The settings object (storage/settings.py) has a field for each limit, under the same
environment variable; the model server reads the variables directly (the serving image has no
pydantic-settings), and the runtimes pass them on. Standard library only: the serving image
imports this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# 50 megapixels: an 8000x6000 phone photo fits; decoded as RGB it takes 150 MB.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# 25 MiB: a large camera JPEG fits; the gateway's client_max_body_size says the same.
DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024
MAX_IMAGE_PIXELS_VARIABLE = "ONEBOX_MAX_IMAGE_PIXELS"
MAX_BODY_BYTES_VARIABLE = "ONEBOX_MAX_BODY_BYTES"


@dataclass(frozen=True)
class InputLimits:
    """The limits a model server applies to each request."""

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> InputLimits:
        """The limits in ONEBOX_MAX_IMAGE_PIXELS and ONEBOX_MAX_BODY_BYTES, the defaults where unset.

        Raises:
            ValueError: a variable is set but is not a whole number of at least 1.
        """
        return cls(
            max_image_pixels=_positive(environ, MAX_IMAGE_PIXELS_VARIABLE, DEFAULT_MAX_IMAGE_PIXELS),
            max_body_bytes=_positive(environ, MAX_BODY_BYTES_VARIABLE, DEFAULT_MAX_BODY_BYTES),
        )

    def environment(self) -> dict[str, str]:
        """The variables that make a model server apply these limits."""
        return {
            MAX_IMAGE_PIXELS_VARIABLE: str(self.max_image_pixels),
            MAX_BODY_BYTES_VARIABLE: str(self.max_body_bytes),
        }


def _positive(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name}={raw!r} is not a whole number of at least 1")
    return int(raw)
