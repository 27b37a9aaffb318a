"""spt: a seccomp-sandboxed process tender for Solo5 unikernels (spt ABI 1 and 2)."""

__version__ = "0.1.0"


class SptError(Exception):
    """A refusal to launch, with a one-line message for the operator.

    Every stage raises it with a message an operator can act on; only the
    command-line entry points catch it (and only they catch broadly), print
    `solo5-spt: MESSAGE` and exit 1. It lives here, in the package every
    module imports anyway, so that a launch loads no module for it
    (spt/errors.py names it too)."""

    def __init__(self, message: str, *, usage: bool = False):
        super().__init__(message)
        self.usage = usage  # print the usage text after the message
