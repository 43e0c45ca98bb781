"""rsuper.synthetic: the synthetic world for tests, benchmarks and ``rsuper demo``.

``phantoms`` writes whole datasets (CTs, masks, reports, gold tables) from ``anatomy`` (organs with true
sub-segments and tumors) and ``reports`` (free-text reports with their ideal extraction); ``fake_llm``
is a local OpenAI-compatible server standing in for an LLM. Nothing else in rsuper imports this package
except the CLI and the demo.
"""
