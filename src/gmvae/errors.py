"""The one exception type for a user's mistake: the command line prints its message as one line."""


class GMVAEError(ValueError):
    """Bad input, a missing or corrupt file, an impossible setting: the message says which.

    A ValueError, so callers that expect scikit-learn's convention for bad input catch it too.
    """
