"""Names the command line offers as choices, in a module that imports nothing heavy.

``tgif --help`` and the commands that need no network build their parser from these, so they start without
numpy, torch, ultralytics or transformers; the modules that implement the names (:mod:`tgif.baselines`,
:mod:`tgif.captions`) use the same tuples (a test checks that the baselines' table matches).
"""

from __future__ import annotations

#: The classic fusion methods of :data:`tgif.baselines.BASELINES`, in its order.
BASELINE_NAMES: tuple[str, ...] = ("average", "max", "laplacian")
#: Ablation modes of the paper's Table 5: which inputs the caption may use.
CAPTION_MODES: tuple[str, ...] = ("full", "image+detection", "image+segmentation", "image", "none")
