"""Optional extras: the core needs torch, numpy, pyyaml and tqdm only, so every other library is
imported here, when a feature that needs it is used, and a missing one is a one-line error that
names the install command."""

from __future__ import annotations

import importlib

from gsau.errors import GsauError


def need(module: str, extra: str, feature: str, package: str | None = None):
    """Import `module` for `feature`, or say which extra to install. `package` names what is
    missing when the module is a wrapper (torch.utils.tensorboard needs tensorboard)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = package or getattr(e, "name", None) or module.split(".")[0]
        raise GsauError(f"{feature} needs {missing} (not installed): pip install 'gsau[{extra}]'") from None
