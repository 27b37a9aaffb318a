"""systemd's unit file syntax: values quoted so that systemd reads back exactly
what spt means (systemd.syntax(7), systemd.exec(5), systemd.service(5)).

What spt writes into a unit file is an instance name, a user name, numbers,
constants, and paths (a unikernel, block files, this installation's Python).
Names and numbers are checked where they are parsed (spt.unitconf) and need
no quoting; a path can hold anything but NUL, so it is quoted here, as the
directive it goes into reads its words:

- ReadWritePaths=, BindPaths=, BindReadOnlyPaths=, DeviceAllow= split their
  value into words at blanks (BindPaths= and BindReadOnlyPaths= at `:` too:
  SOURCE:DEST:OPTIONS), remove '...' and "..." quotes, and then expand `%`
  specifiers. A character that is neither a letter, a digit nor one of
  PLAIN is written inside quotes of its own ("'" inside "...", '"' inside
  '...'), where neither a blank nor `:` separates; a backslash inside
  quotes escapes the next character in every one of these directives, so
  `\\` is written "\\\\" (quoted, so that a line never ends in a backslash,
  which would continue it); `%` is written `%%`.
- ExecStart= splits at blanks, removes quotes, reads C escapes, expands `%`
  specifiers and `$VAR`: an argument that is not all PLAIN is written in
  "..." with `\\` and `"` escaped, `%` as `%%` and `$` as `$$`.

Unit files are UTF-8 text, one directive a line: what cannot be written so
(bytes that are not UTF-8, control characters) is refused before anything
is written, by spt.unitconf.check_text, which every value passes.
"""

from __future__ import annotations

PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-+,=@~")


def _plain(c: str) -> bool:
    # beyond ASCII (control characters are refused before): no separator,
    # quote or escape of systemd's is outside ASCII
    return c in PLAIN or ord(c) > 0x9f


def path_word(path: str) -> str:
    """`path` as one word of ReadWritePaths=, BindPaths=, BindReadOnlyPaths=
    or DeviceAllow=: read back by systemd as exactly `path`."""
    out = []
    for c in path:
        if _plain(c):
            out.append(c)
        elif c == "%":
            out.append("%%")
        elif c == '"':
            out.append("'\"'")
        elif c == "\\":
            out.append('"\\\\"')
        else:
            out.append('"%s"' % c)
    return "".join(out)


_EXEC_ESCAPES = {"\\": "\\\\", '"': '\\"', "%": "%%", "$": "$$"}


def exec_word(arg: str) -> str:
    """`arg` as one word of ExecStart=: read back by systemd as exactly `arg`
    (its C escapes, specifiers and variables taken literally)."""
    if arg and all(_plain(c) for c in arg):
        return arg
    return '"%s"' % "".join(_EXEC_ESCAPES.get(c, c) for c in arg)
