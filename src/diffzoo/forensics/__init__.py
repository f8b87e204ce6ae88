"""Forensics: generated-image detection, hallucination detection and protection against mimicry.

* :mod:`~diffzoo.forensics.detection` -- ROC AUC / AP / accuracy / TPR at 1% FPR (scikit-learn), random
  patches and top-M aggregation, score filters;
* :mod:`~diffzoo.forensics.dire` -- DIRE (Wang et al., ICCV 2023, arXiv 2303.09295);
* :mod:`~diffzoo.forensics.hallucination` -- mode interpolation and the x0-variance detector (Aithal et
  al., NeurIPS 2024, arXiv 2406.09358);
* :mod:`~diffzoo.forensics.protect` -- Diff-Protect: AdvDM, PhotoGuard, Mist, SDS(+/-), SDST(-) (Xue et
  al., ICLR 2024, arXiv 2311.12832).

The laundering detector of Mandelli et al. (arXiv 2407.10736) is built from ``detection`` (patches,
top-M) and the zoo's TinySD in :mod:`diffzoo.zoo.forensics`. Algorithms take models as arguments.
"""
