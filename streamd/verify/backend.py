"""What the verifier needs from a backend: a name, one async judge call, and a close."""

from __future__ import annotations

from typing import Protocol

from streamd.verify.prompt import Prompt

__all__ = ["Backend"]


class Backend(Protocol):
    """Answers a prompt with the model's raw text; raises VerifyError when it cannot."""

    @property
    def name(self) -> str:
        """`kind:model`, reported with each result and in describe()."""
        ...

    async def start(self) -> None:
        """Acquire what the backend needs (load a model); called once before the first judge."""
        ...

    async def judge(self, prompt: Prompt) -> str:
        """The model's reply text for `prompt`."""
        ...

    async def aclose(self) -> None:
        """Release connections and models."""
        ...
