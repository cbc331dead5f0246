"""Importing trl 0.28's trainers for the loss cross-checks.

trl 0.28's `is_*_available` return transformers' `_is_package_available(...)`, which is a (bool, version)
tuple in recent transformers and hence always truthy: `trl.trainer.callbacks` then runs `import weave` and
fails. The tuple is unwrapped while a trainer module is imported.
"""

import importlib

import pytest


def trl_trainer(module: str, name: str):
    """`from trl.trainer.<module> import <name>`, with the availability checks unwrapped during the import."""
    import trl.import_utils as trl_import_utils

    with pytest.MonkeyPatch.context() as mp:
        for check_name in [n for n in vars(trl_import_utils) if n.startswith("is_") and n.endswith("_available")]:
            check = getattr(trl_import_utils, check_name)

            def unwrapped(*args, _check=check, **kwargs):
                found = _check(*args, **kwargs)
                return found[0] if isinstance(found, tuple) else found

            mp.setattr(trl_import_utils, check_name, unwrapped)
        return getattr(importlib.import_module(f"trl.trainer.{module}"), name)
