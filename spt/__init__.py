"""spt: a seccomp-sandboxed process tender for Solo5 unikernels (spt ABI 1 and 2)."""

__version__ = "0.1.0"
