"""Serving a bundle: vLLM's OpenAI-compatible server plus ``POST /v1/recommendations`` (``genrec serve``).

- ``serving.request``: what a recommendation request means (history keys -> prompt and exclusions, ranked rows
  -> response items), shared with offline batch generation (``generative_rec.generate``);
- ``serving.launch``: starts vLLM's own HTTP server (its app, its engine client, its flags) for a bundle,
  with the trie logits processor registered and our router attached to the same app and engine;
- ``serving.app``: the ``/v1/recommendations`` route, its request/response schemas and the service object;
- ``serving.cli``: ``genrec serve``.

The server process imports the bundle, decoding, explanation contract and this package only: no data
readers, training tasks or evaluation (``tests/unit/test_request.py`` checks it).
"""
