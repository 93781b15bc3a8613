"""The one output container of the front end: the tokenizer's ``BatchEncoding`` and the feature
extractor's ``BatchFeature`` (Hugging Face has two near-identical classes; here the names are one
class, so ``isinstance`` holds across them).

A plain dict (``out["input_ids"]``) that also reads as attributes (``out.input_ids``) and moves its
tensors with ``.to(device)`` or casts the floating ones with ``.to(torch.float16)``.
"""
from __future__ import annotations

import torch

__all__ = ["BatchEncoding", "BatchFeature"]


class BatchEncoding(dict):
    """A dict with attribute access and ``.to``, as Hugging Face's ``BatchEncoding`` / ``BatchFeature``."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; fields: {list(self)}") from None

    # Pickled as the plain dict it is: without these, pickle's lookups of __getstate__ / __setstate__
    # would go through __getattr__ above.
    def __getstate__(self) -> dict:
        return dict(self)

    def __setstate__(self, state: dict) -> None:
        self.update(state)

    def to(self, *args, **kwargs) -> "BatchEncoding":
        """Move every tensor to a device (``.to("cuda")``) and/or cast the floating ones
        (``.to(torch.float16)``, ``.to(device=..., dtype=...)``); in place, returning self, as Hugging Face
        does. Integer tensors (ids, masks) keep their dtype; lists and NumPy arrays stay as they are."""
        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}; allowed are device and dtype")
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            else:
                device = arg
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                if device is not None:
                    value = value.to(device)
                if dtype is not None and value.is_floating_point():
                    value = value.to(dtype)
                self[key] = value
        return self


BatchFeature = BatchEncoding  # the feature extractor's name for the same container
