"""What every original-format processor shares: turning generated ids back into text through its tokenizer."""

from __future__ import annotations

from typing import Any


class DecodesWithTokenizer:
    """decode / batch_decode as a transformers processor offers them, delegated to `self.tokenizer`."""

    tokenizer: Any

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """The tokenizer's decode."""
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """The tokenizer's batch_decode."""
        return self.tokenizer.batch_decode(*args, **kwargs)
