"""The one exception type for a user's mistake: the command line prints its message as one line."""


class GMVAEError(Exception):
    """Bad input, a missing or corrupt file, an impossible setting: the message says which."""
