"""The ``vidseg`` command line: one module per command group."""
