"""Errors a user can cause or meet: reported as one line, never a traceback."""


class UserError(Exception):
    """A problem to report to the user as one line, with a non-zero exit."""
