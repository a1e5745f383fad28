"""Errors a user can cause. They are printed as one line, never as a traceback."""


class StageError(Exception):
    """The stage cannot run at all (input missing, nothing readable, bad option)."""


class ShardError(Exception):
    """One input file cannot be read as a whole (e.g. a Parquet file without a `text` column).

    The file is skipped and counted; the other files of the run are unaffected."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
