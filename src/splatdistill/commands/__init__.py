"""CLI subcommands. Each module defines ``register(subparsers)``; add it to ``COMMAND_MODULES``.

A subcommand's ``func(args) -> int`` does the work; it raises :class:`splatdistill.errors.UserError`
for bad input (the CLI turns it into a one-line message and exit status 2).
"""

COMMAND_MODULES = [
    "splatdistill.commands.info",
    "splatdistill.commands.features",
    "splatdistill.commands.bench",
    "splatdistill.commands.train",
    "splatdistill.commands.eval",
    "splatdistill.commands.data",
    "splatdistill.commands.lifter",
    "splatdistill.commands.demo",
    "splatdistill.commands.export",
]
