"""petctiqa: PET/CT image-quality assessment toolkit.

Rebuild the PET-CT-IQA-DS dataset from DICOM, run reader studies, and train/score MS-IQA.
"""

__version__ = "0.1.0"
