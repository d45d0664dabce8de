"""Test servers for the integration tests, the benchmark and the demo:
nginx (a real server with a generated config) and fault_server (a mock
that misbehaves on demand)."""
