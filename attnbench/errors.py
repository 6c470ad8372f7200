"""The one exception type a user can cause; the CLI turns it into one red line and a non-zero exit."""


class AttnbenchError(Exception):
    """A problem the user can fix (bad name, impossible shape, missing file, no GPU, ...)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
