"""The exceptions that make up onebox's error interface.

Each message names the bad value and what to do about it; the CLI prints them without a
traceback and the server turns them into 4xx answers.
"""


class OneboxError(Exception):
    """Base class for every error a user can cause and fix."""


class DatasetError(OneboxError):
    """A dataset path, name or content is not usable."""


class ParameterError(OneboxError):
    """A training or serving parameter is out of range or impossible on this machine."""


class ModelError(OneboxError):
    """A model, model version or run is missing or unusable."""


class ServingError(OneboxError):
    """A model server could not be started, reached or stopped."""


class LabelError(OneboxError):
    """A label, an inbox image or a labeling request is not usable (unknown class, no such image)."""
