"""Registration with transformers' Auto classes, done when transformers is there — never earlier.

``import llava_next_video_hf`` must make ``AutoConfig``/``AutoModel``/``AutoModelForImageTextToText``/
``AutoProcessor`` load our checkpoints, yet importing the package must not import torch or
transformers (decoding videos needs neither). So the package calls :func:`register_when_transformers_loads`:

* transformers already imported: register now;
* otherwise: a meta-path finder waits for ``import transformers`` (by anyone) and registers right after
  transformers' ``__init__`` has run. When that import happens *inside* one of our own modules (say
  ``llava_next_video_hf.modeling`` doing ``from transformers import ...``), registering at that point would
  import that half-initialised module again; the finder then waits until our outermost module that is
  still initialising has finished, and registers then. Once registered, the finder removes itself.

A registration that fails inside somebody's ``import transformers`` is reported as a warning (the
import itself goes through); :func:`register` raises it when called directly.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_PACKAGE = __name__.rpartition(".")[0]
_lock = threading.RLock()
_registered = False
_registering = False


def register() -> None:
    """Register config, models, processors and llava-hf key mapping with transformers (idempotent).

    Imports torch, transformers and the model/processor modules.
    """
    global _registered, _registering
    with _lock:
        if _registered or _registering:
            return
        _registering = True
        try:
            from transformers import AutoConfig

            from .compat import register as register_compat
            from .configuration import LlavaNextVideoAnyResConfig
            from .modeling import register_auto_classes as register_models
            from .processing import register_auto_classes as register_processors

            AutoConfig.register(
                LlavaNextVideoAnyResConfig.model_type, LlavaNextVideoAnyResConfig, exist_ok=True
            )
            register_models()
            register_processors()
            register_compat()  # from_pretrained reads llava-hf configs and weight names (legacy and current)
            _registered = True
        finally:
            _registering = False
    _uninstall()


def is_registered() -> bool:
    """Whether :func:`register` has completed in this process."""
    return _registered


def register_when_transformers_loads() -> None:
    """Register now if transformers is imported, else as soon as it is (see the module docstring)."""
    if "transformers" in sys.modules:
        register()
    elif not any(isinstance(f, _TransformersImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TransformersImportHook())


def _uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TransformersImportHook)]


def _initialising(module: ModuleType | None) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _ours_initialising(finished: str) -> bool:
    """Whether a submodule of this package other than ``finished`` is part-way through its import."""
    prefix = _PACKAGE + "."
    return any(
        name.startswith(prefix) and name != finished and _initialising(mod)
        for name, mod in list(sys.modules.items())
    )


def _register_from_hook(finished: str) -> None:
    """Register unless one of our modules is still initialising (then its own hook will come back here)."""
    if _registered or _registering or "transformers" not in sys.modules or _ours_initialising(finished):
        return
    try:
        register()
    except Exception as err:  # a failed registration must not break somebody else's `import transformers`
        warnings.warn(
            f"{_PACKAGE} could not register its model with transformers' Auto classes "
            f"({type(err).__name__}: {err}); call {_PACKAGE}._registration.register() to see the traceback",
            RuntimeWarning,
            stacklevel=2,
        )


class _TransformersImportHook(importlib.abc.MetaPathFinder):
    """Runs :func:`register` after ``transformers`` (or, if one of ours imported it, that module) is loaded.

    It finds nothing itself: it asks the other finders for the spec of ``transformers`` or of one of our
    submodules and wraps that spec's loader's ``exec_module`` so that registration follows it.
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "transformers" and not fullname.startswith(_PACKAGE + "."):
            return None
        if _registered:
            _uninstall()
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader: Any = spec.loader
        if loader is not None and hasattr(loader, "exec_module"):
            exec_module = loader.exec_module

            def exec_then_register(module: ModuleType) -> None:
                exec_module(module)
                _register_from_hook(finished=fullname)  # this one has run; it still counts as initialising

            try:
                loader.exec_module = exec_then_register
            except AttributeError:  # a loader with slots: leave it alone
                pass
        return spec


__all__ = ["is_registered", "register", "register_when_transformers_loads"]
