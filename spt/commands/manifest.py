"""`spt manifest gen|check`: the manifest of a guest, from its JSON.

`gen` is what the guest kit's build runs (as `python -m spt.manifest gen`,
the same function): JSON in Solo5's shape becomes the C source of the MFT1
note. `check` applies the same rules without writing anything, and also
reads the generated note bytes back with the launcher's own parser, so a
manifest that passes here is one `solo5-spt` accepts.
"""

from __future__ import annotations

import typer

from spt.commands._common import SptTyper, one_line_errors, print_json

manifest_app = SptTyper(
    name="manifest",
    help="Generate and check guest manifests (Solo5's JSON shape).",
    no_args_is_help=True,
)


def read_manifest(json_path: str):
    """The checked manifest declared in `json_path`, with the note bytes it
    becomes parsed back by the launcher's parser."""
    from spt import manifest, manifestgen

    declared = manifestgen.read_json(json_path)
    try:
        parsed = manifest.parse(declared.pack())
    except manifest.ManifestError as exc:
        raise manifest.ManifestError("%s: %s" % (json_path, exc)) from None
    if parsed.to_json() != declared.to_json():
        raise manifest.ManifestError("%s: the note does not read back as declared" % json_path)
    return parsed


def render_text(json_path: str, mft) -> str:
    from spt import abi

    lines = ["%s: valid, %d of %d devices" % (json_path, len(mft.devices),
                                             abi.MFT_MAX_ENTRIES - 1)]
    for entry in mft.devices:
        lines.append("  %-3d %-20s %s" % (entry.index, entry.name, entry.type_name))
    return "\n".join(lines)


@manifest_app.command()
@one_line_errors
def gen(
    manifest_json: str = typer.Argument(..., metavar="MANIFEST.json",
                                        help="The guest's manifest in Solo5's JSON shape."),
    out_c: str = typer.Argument(..., metavar="OUT.c", help="Where to write the note's C source."),
) -> None:
    """Write the C source of a guest's MFT1 note from its JSON manifest.

    The guest kit's build runs this. OUT.c is written atomically, and not at
    all if the manifest is invalid."""
    from spt.manifestgen import write_c_source

    write_c_source(manifest_json, out_c)


@manifest_app.command()
@one_line_errors
def check(
    manifest_json: str = typer.Argument(..., metavar="MANIFEST.json",
                                        help="The guest's manifest in Solo5's JSON shape."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print the manifest as solo5-elftool query-manifest does."),
) -> None:
    """Check a JSON manifest against the ABI's rules.

    Names, types, the device count and duplicates; then the note bytes it
    becomes are read back with the launcher's own parser."""
    mft = read_manifest(manifest_json)
    if as_json:
        print_json(mft.to_json())
    else:
        typer.echo(render_text(manifest_json, mft))


def register(app: typer.Typer) -> None:
    app.add_typer(manifest_app)
