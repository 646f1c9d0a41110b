"""Distortions as plug-ins: a registry and one module per distortion.

``get_distortion(name)(data, value, rng)`` applies one; ``list_distortions()`` lists them. The
built-in plug-ins below register themselves on import. Modules that need heavy libraries
(scikit-image's projector) import them only when applied, so importing this package stays cheap
for the dataset build's workers.
"""

from petctiqa.distortions import (  # noqa: F401  (importing a plug-in registers it)
    ct_dose,
    ct_sparse_view,
    gaussian,
    impulse,
    jpeg,
    misregistration,
    pet_counts,
    shot,
)
from petctiqa.distortions.registry import (
    DOMAINS,
    Distortion,
    Parameter,
    get_distortion,
    list_distortions,
    register_distortion,
)

__all__ = [
    "DOMAINS",
    "Distortion",
    "Parameter",
    "get_distortion",
    "list_distortions",
    "register_distortion",
]
