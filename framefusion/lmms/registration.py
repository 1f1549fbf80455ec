"""The lmms-eval entry point (group `lmms_eval.models`): the manifest of the `framefusion` model.

Imported while lmms-eval builds its model registry, so it imports nothing of framefusion and ModelManifest only
inside the function (importing lmms_eval's registry at module level here would re-enter its initialisation).
"""

from __future__ import annotations


def manifests():
    """The `framefusion` model: a chat class (lmms-eval's default) and a simple one (`--force_simple`)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="framefusion", chat_class_path="framefusion.lmms.model.FrameFusionChat",
                         simple_class_path="framefusion.lmms.model.FrameFusionSimple")
