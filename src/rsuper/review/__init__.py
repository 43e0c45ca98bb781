"""Reports check the model (``rsuper review``, docs/review_refine.md).

``agreement``: per CT and organ, prediction versus report and the agreement score; ``queue``: the ranked
queue with reasons in words; ``html``: overlay pictures and the page; ``run``: a whole prediction folder; ``truth``: queue and
refined masks against true masks (demo, benchmark). Words: ``rsuper.reports.words``.
"""
