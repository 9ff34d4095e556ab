"""specfleet: a Kubernetes control plane for fleets of speculative-decoding LLM replicas."""

__version__ = "0.1.0"
