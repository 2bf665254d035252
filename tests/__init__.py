"""CNN Lens tests: a package, so conftest is imported once, as tests.conftest."""
