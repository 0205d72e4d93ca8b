"""/api/v1/usage: tokens and cost of model calls, aggregated."""
