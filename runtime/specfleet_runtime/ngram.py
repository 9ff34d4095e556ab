"""Prompt-lookup proposals: continue the sequence the way it continued last time its
suffix appeared (over the prompt and the generated text), no model involved.

An index from each n-gram (n = 1..max_n) to the latest position it ended at makes a
lookup O(max_n) per step. The index lags the sequence by one token, so the current
suffix never matches itself.
"""

from __future__ import annotations


class NgramProposer:
    def __init__(self, tokens: list[int], max_n: int = 3) -> None:
        self.max_n = max_n
        self._tokens = tokens  # shared with the sequence, which appends to it
        self._index: dict[tuple[int, ...], int] = {}
        self._indexed = 0  # n-grams ending before this position are in the index

    def _catch_up(self) -> None:
        tokens, end = self._tokens, len(self._tokens) - 1
        for i in range(self._indexed, end):
            for n in range(1, min(self.max_n, i + 1) + 1):
                self._index[tuple(tokens[i - n + 1 : i + 1])] = i
        self._indexed = max(self._indexed, end)

    def propose(self, k: int) -> list[int]:
        """Up to k tokens that followed the longest earlier occurrence of the current suffix."""
        self._catch_up()
        tokens = self._tokens
        for n in range(min(self.max_n, len(tokens)), 0, -1):
            end = self._index.get(tuple(tokens[-n:]))
            if end is not None:
                return tokens[end + 1 : end + 1 + k]
        return []
