"""Stores behind ``ActivityTracker``: one module per store."""
