"""instaseg.evaluation: COCO scoring of predictions and results files, and how closely two predictors agree.

Below the engine and export, which both score models: it needs no predictor of its own (one passed in is used).
"""
