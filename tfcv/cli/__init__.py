"""The `tfcv` command: one module per sub-command (see `tfcv.cli.main`)."""
