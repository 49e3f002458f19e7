"""Command-line tools of bird-bone: the ``novaq`` tool lives in ``bird_bone.cli.novaq``.

Kedro imports ``<package>.cli`` and expects a click group named ``cli`` there for project-specific
``kedro`` commands; bird-bone adds none, so the group below is empty on purpose.
"""

import click


@click.group(name="bird-bone")
def cli() -> None:
    """bird-bone adds no project commands to kedro; see `novaq --help`."""
