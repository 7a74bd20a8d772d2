"""The Kubernetes platform: a kopf operator that plans child objects from specs and reads status back."""
