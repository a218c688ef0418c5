"""CoGRNet: semi-supervised 3D segmentation from Dual-Plane Annotation.

Library behind the entry scripts in ``code/``. Modules are named after the pipeline
stages: ``data`` -> ``annotation`` (coarse labels) -> ``networks`` -> ``inference`` ->
``methods`` -> ``evaluation`` -> ``training`` (the README's Layout gives the layers).
"""

__version__ = "0.1.0"
