"""Identity adapters: password hashing and signed access tokens."""
