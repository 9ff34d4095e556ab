"""The torch engine: continuous batching with lossless speculative decoding."""
