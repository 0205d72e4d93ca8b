"""Chat adapters: the conversations read model and the command handler that keeps it read-your-writes."""
