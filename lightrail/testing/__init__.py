"""Real local stand-ins for a deployment, used by tests and benchmarks: a tiny generated model,
a real vLLM server on CPU, a body-based router in front of several servers, a model of a
gateway's data plane (gateway.py, rules in routing.py) and a traffic driver (traffic.py)."""
