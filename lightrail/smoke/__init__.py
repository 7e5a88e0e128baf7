"""Smoke: does a deployment really serve the pattern it claims to? Real requests, real answers."""
