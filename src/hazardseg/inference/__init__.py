"""Inference on any image or video: per-pixel maps from a checkpoint (:mod:`.predictor`), the
``predict`` command's files (:mod:`.predict`), the ``visualize`` qualitative figures
(:mod:`.visualize`, :mod:`.panels`) and the array renderers both use (:mod:`.render`)."""
