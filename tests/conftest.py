"""pytest configuration; the helpers the tests share live in tests/helpers."""
