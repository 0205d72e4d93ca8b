"""Talking to models, provider-neutral: requests, stream events, errors and the model ports."""
