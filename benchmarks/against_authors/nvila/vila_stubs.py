"""Imported before `llava` in the oracle venv: stand-ins for what VILA imports but never runs here.

Each is listed, with why, in README.md: packages for training and GPU kernels (deepspeed, flash_attn), a dataset
helper (datasets), the S2 multi-scale wrapper of the non-dynamic S2 towers (s2wrapper, a git-only package), and
VILA's FP8 / quantized-training model classes, which import triton. Any attribute of a stand-in is a placeholder
(a decorator returns its function unchanged); nothing of it is called on the inference path.
"""
import importlib.abc
import importlib.machinery
import sys
import types

STUBBED_PACKAGES = ("deepspeed", "flash_attn", "datasets", "s2wrapper")
STUBBED_MODULES = ("llava.model.language_model.fp8linearqwen2", "llava.model.language_model.qllava_qllama")


class _Meta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Anything

    def __call__(cls, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return cls

    def __getitem__(cls, item):
        return cls


class Anything(metaclass=_Meta):
    """A placeholder for any attribute, call or subscript of a stubbed module."""


def _module_getattr(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return Anything


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__getattr__ = _module_getattr
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


class _StubFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in STUBBED_MODULES or name.split(".")[0] in STUBBED_PACKAGES:
            return importlib.machinery.ModuleSpec(name, _StubLoader(), is_package=True)
        return None


sys.meta_path.insert(0, _StubFinder())
