"""CoGRNet: semi-supervised 3D segmentation from Dual-Plane Annotation.

Library behind the entry scripts in ``code/``. Modules are named after the pipeline
stages: ``data`` -> ``annotation`` (coarse labels) -> ``training`` -> ``inference`` ->
``evaluation``.
"""

__version__ = "0.1.0"
