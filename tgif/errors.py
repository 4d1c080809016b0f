"""Exceptions a user of TGIF can see.

Every error raised on purpose by the library derives from :class:`TgifError`, so the CLI
(and later the app) can show its message as one line instead of a traceback. Messages
name the file or value at fault and say what to do about it.
"""


class TgifError(Exception):
    """Base class of all errors that TGIF raises on purpose."""


class ImageLoadError(TgifError, ValueError):
    """A file or object could not be read as an image (missing, empty, corrupt, odd type)."""


class ImageTooLargeError(TgifError, ValueError):
    """An image has more pixels than the configured limit."""


class PairSizeError(TgifError, ValueError):
    """The two images of a pair have different sizes and resizing was not asked for."""


class DatasetError(TgifError, ValueError):
    """A dataset folder is missing or not laid out as ``<dataset>/<modality>/<id>.<ext>``."""


class MetricInputError(TgifError, ValueError):
    """Arrays given to a metric have the wrong shape, range or type."""


class UnknownNameError(TgifError, KeyError):
    """A method, metric or dataset name that is not registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class TextEncoderError(TgifError, ValueError):
    """A text encoder could not be loaded, or was given something that is not a list of captions."""


class CheckpointError(TgifError):
    """A model checkpoint is unknown, missing, corrupt, or could not be downloaded or verified."""


class CheckpointMismatchError(TgifError):
    """A model checkpoint was trained for something else than asked (another text encoder)."""
