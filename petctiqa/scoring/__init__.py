"""Scoring at archive scale: fast runtimes, archive walking, journal and sharding (#14)."""
