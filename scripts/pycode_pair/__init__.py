"""Recipe for specfleet's bundled Python-code model pair (target + distilled draft).

Kept free of the `specfleet` package so it runs with a bare torch/transformers/tokenizers
install (the GPU machine has no pydantic).
"""
