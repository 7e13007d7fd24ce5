"""Fixtures of the export tests."""

from tests.fileserver import file_server  # noqa: F401  (a local HTTP server for downloads)
