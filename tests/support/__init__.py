"""Helpers shared by tests (tiny SavedModels, ...)."""
