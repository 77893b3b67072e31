"""generative_rec: a generative recommender built on a causal LLM.

Stages (one direction, one artifact between them)::

    prepare -> index -> render prompts -> train (LoRA) -> bundle -> eval / serve / generate
"""

__version__ = "0.1.0"
