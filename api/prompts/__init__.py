"""/api/v1/prompts: the prompt template library."""
