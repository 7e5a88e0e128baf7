"""The kserve stack: Istio + KServe LLMInferenceService, composed with kustomize."""
