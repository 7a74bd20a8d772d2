"""The retrieving, citing, multi-tenant gateway in front of vLLM (`python -m tandem.workloads.gateway`)."""
