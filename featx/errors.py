"""The exception types of featx.

A :class:`FeatxError` is a problem with the user's input or environment, with a message meant for
them; the CLI turns it into one line on stderr and exit code 2. Any other exception is a bug.

Messages name Python parameters, marked with backticks where written: ``"`batch_size` must be at
least 1, got 0"`` reads ``batch_size must be at least 1, got 0`` from the library, and the CLI
names its own flag instead (``--batch-size must be ...``); ``"`weights`=PATH"`` reads
``weights=PATH``, and ``--weights PATH`` on the command line.
"""

from __future__ import annotations

import re
from typing import Callable

PARAM = re.compile(r"`(\w+)`(=?)")


class FeatxError(Exception):
    """A problem with the user's input or environment, with a message meant for them."""

    def __init__(self, message: str) -> None:
        self.template = message
        super().__init__(PARAM.sub(lambda m: m.group(1) + m.group(2), message))

    @property
    def params(self) -> list[str]:
        """The parameters the message names."""
        return [m.group(1) for m in PARAM.finditer(self.template)]

    def render(self, flag: Callable[[str], str | None]) -> str:
        """The message with each parameter named by ``flag(name)`` (None: keep the name)."""
        def sub(m: re.Match) -> str:
            name = flag(m.group(1))
            if name is None:
                return m.group(1) + m.group(2)
            return name + (" " if m.group(2) else "")
        return PARAM.sub(sub, self.template)


class NotFittedError(FeatxError, AttributeError):
    """A model was used before it was fitted (scikit-learn's ``check_is_fitted`` idea)."""
