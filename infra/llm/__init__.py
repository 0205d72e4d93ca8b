"""Model adapters on the providers' official SDKs, behind the ports in domain.llm."""
