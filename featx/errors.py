"""The one exception type for user errors (bad folder, wrong store, mismatched settings).

The CLI turns a :class:`FeatxError` into one line on stderr and exit code 2; any other
exception is a bug and may show a traceback.
"""


class FeatxError(Exception):
    """A problem with the user's input or environment, with a message meant for them."""
