"""Database access: engine, session types, table metadata and migrations."""
