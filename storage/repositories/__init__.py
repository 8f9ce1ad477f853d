"""Repositories: typed reads and writes over one session. They flush, they never commit."""
