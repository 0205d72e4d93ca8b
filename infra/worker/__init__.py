"""Background work: the transactional outbox, its relay to Dramatiq, jobs, and the worker runtime."""
