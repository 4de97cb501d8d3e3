"""Model parts that two or more architectures share: backbones, layers, anchor points, NMS and candidate selection,
losses, mask pasting, the R-CNN family's builders and export helpers, and the model sections' value rules.

Architecture packages import from here and from `instaseg.models.detector`, never from one another, so editing
one architecture never changes another; a part moves here once a second architecture needs it.
"""
