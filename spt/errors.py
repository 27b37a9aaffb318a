"""The one error type that reaches `main()`: `SptError` (defined in the
package itself, spt/__init__.py, so that a launch loads no module for it)."""

from spt import SptError

__all__ = ["SptError"]
