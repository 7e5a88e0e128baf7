"""The llmd stack: Gateway API + llm-d charts, composed with helmfile."""
