"""Plumbing every HTTP route shares: request ids and logging, and the request/response bodies."""
