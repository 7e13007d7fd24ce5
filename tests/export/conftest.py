"""Fixtures of the export tests."""

from tests.fileserver import file_server, https_file_server  # noqa: F401  (local HTTP(S) servers)
