"""User-facing errors.

Every error a user can cause (bad spec, bad model path, invalid frame count...) is a
`GenAccelError`: the CLI prints its message on one line and exits with status 2, without a traceback.
The one exception to "one line": the errors of a batch file are all listed, one line each, so that a
file is fixed in one go.
"""


class GenAccelError(Exception):
    """An error caused by the user's input, with a message meant to be read by them."""


class SpecError(GenAccelError):
    """A malformed or invalid accelerator spec."""


class ModelError(GenAccelError):
    """A model that cannot be found, loaded or recognised."""


class InputError(GenAccelError):
    """A generation argument outside what the model accepts."""


class OutputError(GenAccelError):
    """A file genaccel was writing that the file system refused: no space left, no permission, a read-only folder."""


class MemoryFitError(InputError):
    """A run whose estimated peak memory exceeds what the device has (or what --max-memory allows)."""
