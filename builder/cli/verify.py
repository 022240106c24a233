"""``builder verify``: check a published image's signature and attestations (:mod:`builder.sign.verify`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from builder.cli.common import BuildDirOpt, MatrixOpt, fail, guard, load
from builder.engine.registry import Credentials, Registry, host_of
from builder.sign import cosign
from builder.sign import verify as checks


def verify_command(ref: str = typer.Argument(..., help="host[:port]/path:tag or host[:port]/path@sha256:<hex> (one image or an index: every platform)."),
                   key: str = typer.Option(..., "--key", help="The public key (PEM file) or key manager URI the images are signed with."),
                   as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
                   matrix: Path = MatrixOpt, build_dir: Path = BuildDirOpt) -> None:
    """Verify a published image: its signature, a signed SLSA provenance of this digest from the
    matrix's source at the image's commit, a signed passed smoke test of this build, and a signed
    SBOM listing the framework at its labelled version. One line per check; exit 0 when all hold,
    1 otherwise, 2 for a malformed reference or key."""
    try:
        repository, _ = checks.split_reference(ref)
        public_key = cosign.key_reference(key)
    except ValueError as exc:
        fail([f"verify: {exc}"])
    m = load(matrix)
    with guard():
        tool = cosign.Cosign(cosign.ensure(build_dir), Credentials.from_env())
        findings = checks.verify(ref, tool, public_key, Registry(host_of(repository), Credentials.from_env()), m)
    if as_json:
        typer.echo(json.dumps({"reference": ref, "ok": all(f.ok for f in findings),
                               "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        for f in findings:
            typer.echo(f.line())
    if not findings or not all(f.ok for f in findings):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``verify`` to ``app``."""
    app.command("verify")(verify_command)
