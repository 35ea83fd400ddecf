"""CLI command modules: click at top level, everything heavy inside the command body."""
