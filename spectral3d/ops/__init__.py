"""Spectral ops (DESIGN.md §3, "The ops")."""
