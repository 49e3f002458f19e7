"""Command-line tools of bird-bone: the ``novaq`` tool lives in ``bird_bone.cli.novaq``.

Kedro imports ``<package>.cli`` and takes the click group named ``cli`` there as project commands,
which override its built-ins: bird-bone's ``kedro run`` (clear one-line errors, N:M values on the
command line, ``--check``) lives in ``bird_bone.pipelines.cli`` and is loaded only when asked for,
so this package never imports Kedro.
"""

import click


class _ProjectCommands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return ["run"]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name != "run":
            return None
        from bird_bone.pipelines.cli import run  # the Kedro layer, only under `kedro`

        return run


@click.group(name="bird-bone", cls=_ProjectCommands)
def cli() -> None:
    """bird-bone's `kedro run`; see also `novaq --help`."""
