"""The ``hks`` (account, projects) and ``hks-func`` (functions) command-line tools."""

__version__ = "0.1.0"
