"""Liveness, readiness and the API's own description."""
