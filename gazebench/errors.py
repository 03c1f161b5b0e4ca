"""The one exception type for mistakes a user can make (the CLI prints it as one line, exit 2)."""


class UserError(Exception):
    """A problem the user can fix: the message names the problem and the fix."""
