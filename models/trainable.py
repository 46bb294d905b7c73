"""Which parameters train: `--trainable all | head | <names>`, resolved against a torch module.

    all       every parameter
    head      the parameters of the last module that owns any (the classifier of a zoo model)
    <names>   comma-separated module or parameter names, or fnmatch patterns over parameter
              names: "3" (module 3 of a Sequential), "classifier,pooler", "*.lora_*"

The result keeps the module's own parameter order (the flat order of offers and updates). Every
other parameter is frozen: it ships once in the artifacts and never travels.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

__all__ = ["resolve_trainable"]


def _head(module: nn.Module) -> list[str]:
    owners = [
        name
        for name, sub in module.named_modules()
        if any(True for _ in sub.parameters(recurse=False))
    ]
    if not owners:
        raise ValueError("the model has no parameters")
    last = owners[-1]
    return [
        f"{last}.{n}" if last else n
        for n, _ in module.get_submodule(last).named_parameters(recurse=False)
    ]


def _matches(param: str, item: str) -> bool:
    return param == item or param.startswith(item + ".") or fnmatchcase(param, item)


def resolve_trainable(module: nn.Module, spec: str) -> list[str]:
    """Trainable parameter names for `spec`, in the module's order; ValueError names what failed."""
    names = [n for n, _ in module.named_parameters()]
    spec = spec.strip()
    if spec == "all":
        return names
    chosen = set(_head(module)) if spec == "head" else set()
    if spec != "head":
        items = [item.strip() for item in spec.split(",") if item.strip()]
        if not items:
            raise ValueError("--trainable: empty; use all, head or module names")
        for item in items:
            hits = {n for n in names if _matches(n, item)}
            if not hits:
                raise ValueError(
                    f"--trainable: {item!r} names no parameter; parameters are {', '.join(names)}"
                )
            chosen |= hits
    return [n for n in names if n in chosen]
