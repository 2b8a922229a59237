"""Shared fixtures. Area-specific fixtures live in tests/fixtures/<area>.py."""
pytest_plugins = ["tests.fixtures.core", "tests.fixtures.llm", "tests.fixtures.curate", "tests.fixtures.recall"]
