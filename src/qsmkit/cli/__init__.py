"""Command-line interface: one thin module per command (see :mod:`qsmkit.cli.main`)."""
