"""Sharing: ACL grants on entities (direct or through groups), groups and their members."""
