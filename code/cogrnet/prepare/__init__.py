"""Datasets made from outside sources, in the layout of :mod:`cogrnet.data.dataset`: the
synthetic phantoms (``phantom``) and your own scans (``import_nifti``). Both may carry
Dual-Plane Annotations (simulated, or painted by a user), so this package sits above
``annotation``; the KiTS/LiTS conversion, which needs none, is :mod:`cogrnet.data.preprocess`.
``registration`` turns a dataset's annotations into coarse labels
(``code/utils/registration.py``)."""
