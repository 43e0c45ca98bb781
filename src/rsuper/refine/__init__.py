"""Report-constrained masks from a model's probabilities (``rsuper refine``, docs/review_refine.md).

``grow``: one CT organ's tumors grown with the Ball Loss construction; ``status``: confidence and status
rules; ``run``: a whole dataset, written in the AbdomenAtlas layout.
"""
