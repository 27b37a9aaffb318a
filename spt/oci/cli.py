"""Flag parsing shared by spt-oci's commands: runc's shapes (`--flag value`,
`--flag=value`, boolean `--flag`), by hand, so that no flag an engine sends
is misread and an unknown one is one clear line."""

from __future__ import annotations

from spt.oci.errors import OciError


def parse(argv: list[str], booleans: set[str], valued: set[str], *, what: str,
          stop_at_positional: bool = False) -> tuple[dict, list[str]]:
    """(flags, positionals). Flags may be spelled `-x`/`--x`; a boolean may
    be given `=true`/`=false`. With `stop_at_positional`, the first word that
    is not a flag ends parsing (the rest is returned as positionals)."""
    flags: dict = {}
    positionals: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            if stop_at_positional:
                positionals += argv[i:]
                break
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if name in booleans:
            if eq and value not in ("true", "false"):
                raise OciError("%s: --%s takes true or false, not %r" % (what, name, value))
            flags[name] = not eq or value == "true"
        elif name in valued:
            if not eq:
                if i >= len(argv):
                    raise OciError("%s: --%s needs a value" % (what, name))
                value = argv[i]
                i += 1
            flags[name] = value
        else:
            raise OciError("%s: unknown flag %s" % (what, arg.partition("=")[0]))
    return flags, positionals


def one_id(positionals: list[str], what: str, extra: int = 0) -> list[str]:
    """Exactly one container ID (plus `extra` more operands)."""
    if len(positionals) != 1 + extra:
        raise OciError("%s: expected %s, got %d operand(s)"
                       % (what, "an ID" if not extra else "an ID and %d more" % extra,
                          len(positionals)))
    return positionals
