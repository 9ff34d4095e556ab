"""The specfleet operator: CRD models, pure builders, kopf handlers and the control loop.

Importing this package must never import torch (the operator image has none).
"""
