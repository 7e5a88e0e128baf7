"""Real local stand-ins for a deployment, used by tests and benchmarks: a tiny generated model,
a real vLLM server on CPU, and a body-based router in front of several servers."""
