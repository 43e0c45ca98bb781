"""rsuper.synthetic: the synthetic world for tests, benchmarks and ``rsuper demo``.

Two phantom families write whole datasets (CTs, masks, reports, gold tables) in one layout: ``phantoms`` (the
demo family: drawn organs with true sub-segments and tumors, from ``anatomy``) and ``realct`` (a real abdominal
CT deformed per patient, with contrast phases and organ-relative tumors); both write their reports with
``reports`` (free text with its ideal extraction). ``fake_llm`` is a local OpenAI-compatible server standing in
for an LLM. Nothing else in rsuper imports this package except the CLI and the demo.
"""
