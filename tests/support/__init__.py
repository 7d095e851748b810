"""Test support: real local servers, the test Redis, worker subprocesses, test-only tasks."""
