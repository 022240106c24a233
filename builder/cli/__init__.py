"""The ``builder`` command line (typer). Exit codes: 0 success, 1 a stale check, a failed image or an
Engine/registry that cannot be reached, 2 bad input (an invalid matrix or config, an unknown image
name or selection, a path the tool will not write to).

Errors are one plain line each on stderr (never wrapped, values cut to 80 characters). Only the
project's own error types and OSError on a user's path are caught; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import typer

from builder.cli import deploy as cli_deploy
from builder.cli import generate as cli_generate
from builder.cli import patch as cli_patch
from builder.cli import run as cli_run
from builder.cli import verify as cli_verify
from builder.cli.common import OneLineGroup

app = typer.Typer(cls=OneLineGroup, add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Render, build, smoke-test, tag and publish ML inference images from matrix.yaml. Every "
                       "command takes --build-dir (default: build): the one folder for its logs, reports and "
                       "state.")
cli_generate.register(app)  # render, lock, list, dockerfile, ci-matrix, compat
cli_run.register(app)  # build, test, publish, all, catalog, merge, prune
cli_deploy.register(app)  # extend, serve
cli_verify.register(app)  # verify
cli_patch.register(app)  # outdated, refresh


def main() -> None:
    """The ``builder`` console script."""
    app()
