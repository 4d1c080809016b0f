"""TGIF: text-guided image fusion.

The pipeline, one module per stage: :mod:`tgif.io` (the pair; tasks and modalities from
:mod:`tgif.tasks`) -> :mod:`tgif.perception` (detection and segmentation maps) -> :mod:`tgif.captions`
-> :mod:`tgif.text` (text features) -> :mod:`tgif.model` (the fused image; :mod:`tgif.baselines` for
the classic methods) -> :mod:`tgif.metrics`. :class:`tgif.session.PairSession` is its spine: one pair,
each stage computed once, a caption edit re-running only the text features and the decoder. The app,
:mod:`tgif.cli`, :mod:`tgif.evaluation` (datasets) and :mod:`tgif.steering` fuse through it.
"""

__version__ = "0.1.0"
