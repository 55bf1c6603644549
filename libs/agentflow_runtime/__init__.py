"""Shared runtime for every AgentFlow service: settings, errors, mTLS, server bootstrap, clients, storage."""
