"""Shared library of sessionstreams: models, keys, settings, connection, scripts, engines."""
