"""Workflows that chain the stages: the end-to-end ``demo`` (:mod:`.demo`) and seed-averaged
``ablate`` grids (:mod:`.ablation`)."""
