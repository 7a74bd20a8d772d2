"""Where workloads run: a Kubernetes cluster (kopf operator) or this machine (`tandem up`)."""
