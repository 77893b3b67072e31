"""Explanations of recommendations: one package, one direction of imports.

- :mod:`~generative_rec.explain.contract` — what every runtime does the same way: which template, the prompt
  (token ids), the decoding settings and the clean-up of the text. Light (no torch): the server imports it.
- :mod:`~generative_rec.explain.vllm` — generation on a vLLM engine (the server's async engine, an offline
  ``vllm.LLM`` for batch generation).
- :mod:`~generative_rec.explain.hf` — generation with an HF model (the reference, and evaluation).
- :mod:`~generative_rec.explain.targets` — ground-truth reasons for training and evaluation (templated from
  the history, or a sentence of the user's own review).
- :mod:`~generative_rec.explain.metrics` — BLEU-4, ROUGE-L and faithfulness to the catalogue and history.
- :mod:`~generative_rec.explain.evaluate` — explains sampled users' targets and top-1 items and scores them.

The training task (``tasks/explain.py``) builds examples from :mod:`targets` and :mod:`contract`; nothing in
this package imports the training tasks, the evaluation package or the data readers.
"""
