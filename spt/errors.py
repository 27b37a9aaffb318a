"""The one error type that reaches `main()`.

Every stage raises `SptError` with a message an operator can act on; only the
command-line entry points catch it (and only they catch broadly), print
`solo5-spt: MESSAGE` and exit 1.
"""


class SptError(Exception):
    """A refusal to launch, with a one-line message for the operator."""

    def __init__(self, message: str, *, usage: bool = False):
        super().__init__(message)
        self.usage = usage  # print the usage text after the message
