"""The one way framefusion changes a model in place: every wrapper and hook goes on the model's patch stack.

Decoder-layer forwards, the encoder wrappers (video metadata tags, timers, saliency probes), Qwen3-VL's deepstack
hook and the position rule all go through a `PatchStack`, one per model, undone strictly in reverse order. A method
is installed on an empty stack (whatever was installed before is undone first), and removing it empties the stack,
so the model is again exactly the stock one: no wrapper can outlive, or be dropped by, another's undo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

STACK_ATTRIBUTE = "_framefusion_patches"
_MISSING = object()


class PatchStack:
    """Undo records of the patches on one model, last in first out."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def __len__(self) -> int:
        return len(self._undo)

    @property
    def labels(self) -> list[str]:
        """What is patched, oldest first."""
        return [label for label, _ in self._undo]

    def push(self, undo: Callable[[], None], label: str) -> None:
        """Record the undo of a patch made by the caller."""
        self._undo.append((label, undo))

    def set_attribute(self, owner: Any, name: str, value: Any, label: str | None = None) -> None:
        """Set an instance attribute (shadowing the class's), restored to what it was on undo."""
        previous = owner.__dict__.get(name, _MISSING) if hasattr(owner, "__dict__") else _MISSING
        setattr(owner, name, value)

        def undo() -> None:
            if previous is _MISSING:
                owner.__dict__.pop(name, None)
            else:
                setattr(owner, name, previous)

        self.push(undo, label or f"{type(owner).__name__}.{name}")

    def wrap_method(self, owner: Any, name: str, make: Callable[[Callable], Callable], label: str | None = None) -> None:
        """Replace `owner.name` by `make(current)`; `make` gets the callable now in place."""
        self.set_attribute(owner, name, make(getattr(owner, name)), label)

    def replace_forward(self, module: nn.Module, forward: Callable, label: str | None = None) -> None:
        """Route calls of `module` to `forward` (behind accelerate's device hooks when the model is dispatched)."""
        owner_name = "_old_forward" if _dispatched(module) else "forward"
        self.set_attribute(module, owner_name, forward, label or f"{type(module).__name__}.forward")

    def add_hook(self, handle: Any, label: str) -> None:
        """Record a torch hook handle (register_forward_hook & co.), removed on undo."""
        self.push(handle.remove, label)

    def undo_to(self, size: int) -> None:
        """Undo the newest patches until `size` are left."""
        while len(self._undo) > size:
            _, undo = self._undo.pop()
            undo()

    @contextmanager
    def scope(self) -> Iterator["PatchStack"]:
        """Patches made inside the block are undone when it ends (an exception or Ctrl-C too)."""
        size = len(self._undo)
        try:
            yield self
        finally:
            self.undo_to(size)


def patches_of(model: nn.Module) -> PatchStack:
    """The model's patch stack (created empty on first use)."""
    stack = model.__dict__.get(STACK_ATTRIBUTE)
    if stack is None:
        stack = PatchStack()
        model.__dict__[STACK_ATTRIBUTE] = stack
    return stack


@contextmanager
def patch_scope(model: nn.Module) -> Iterator[PatchStack]:
    """The model's patch stack for patches that last as long as the block (PatchStack.scope); a stack made for
    the block is dropped after it, so a stock model stays untouched."""
    made = STACK_ATTRIBUTE not in model.__dict__
    stack = patches_of(model)
    try:
        with stack.scope():
            yield stack
    finally:
        if made and not len(stack):
            model.__dict__.pop(STACK_ATTRIBUTE, None)


def clear_patches(model: nn.Module) -> None:
    """Undo every patch on the model and drop its stack: the model is the stock one again."""
    stack = model.__dict__.pop(STACK_ATTRIBUTE, None)
    if stack is not None:
        stack.undo_to(0)


def current_forward(module: nn.Module) -> Callable:
    """The callable that runs `module`'s own computation (under accelerate, its wrapped original)."""
    return module._old_forward if _dispatched(module) else module.forward


def _dispatched(module: nn.Module) -> bool:
    """Whether accelerate put a device hook on the module (it then calls `_old_forward`)."""
    return hasattr(module, "_hf_hook") and hasattr(module, "_old_forward")
