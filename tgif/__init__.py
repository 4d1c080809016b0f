"""TGIF: text-guided image fusion.

The pipeline, one subpackage per stage: :mod:`tgif.io` (image pairs) -> fusion
(:mod:`tgif.baselines` for the classic methods) -> :mod:`tgif.metrics`, with
:mod:`tgif.evaluation` running it over datasets and :mod:`tgif.cli` as the command line.
"""

__version__ = "0.1.0"
