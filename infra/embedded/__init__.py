"""Embedded PostgreSQL (+pgvector) and Valkey for zero-configuration installs and tests."""
