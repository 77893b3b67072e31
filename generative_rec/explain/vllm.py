"""Explanations on a vLLM engine, following :mod:`~generative_rec.explain.contract`: its prompt (token ids),
greedy decoding with its settings (EOS, item-ID tokens suppressed) and its text clean-up.

- :class:`VLLMExplainer`: the server's explainer, on the shared async engine (one request per item, all of a
  recommendation's items concurrently);
- :func:`explain_window`: batch generation, all of a window's items in one ``LLM.generate`` call.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from generative_rec.explain.contract import (
    ExplainSettings,
    clean_explanation,
    explain_prompt_ids,
    explain_settings,
    explain_template,
    explanations_trained,
    vllm_sampling_kwargs,
)


class Explainer(Protocol):
    """Hook for explanations: given the history rows and the ranked rows, one text per item."""

    async def explain(self, history: list[int], items: list[int]) -> list[str]: ...


class VLLMExplainer:
    """Explanations on the server's shared async engine."""

    def __init__(self, bundle, engine, lora_request=None):
        self.bundle, self.engine, self.lora_request = bundle, engine, lora_request
        self.settings = explain_settings(bundle)
        self.kwargs = vllm_sampling_kwargs(self.settings)

    async def _one(self, history: list[int], item: int) -> str:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        from generative_rec.decoding.vllm_engine import next_request_id

        prompt = explain_prompt_ids(self.bundle, history, item, self.settings.template, self.settings.max_history)
        params = SamplingParams(**self.kwargs, output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=prompt), params, next_request_id("explain"),
                                              lora_request=self.lora_request):
            final = out
        return clean_explanation(final.outputs[0].text)

    async def explain(self, history: list[int], items: list[int]) -> list[str]:
        return list(await asyncio.gather(*(self._one(history, i) for i in items)))


def make_explainer(bundle, engine, lora_request=None) -> Explainer | None:
    """The bundle's explainer, or None when it was not trained to explain (requests then get HTTP 400)."""
    if not explanations_trained(bundle):
        return None
    return VLLMExplainer(bundle, engine, lora_request)


def explain_window(llm, bundle, settings: ExplainSettings, requests: list[tuple[list[int], int]],
                   lora_request=None) -> list[str]:
    """One explanation per ``(history rows, item row)``, all in one offline ``LLM.generate`` call."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    if not requests:
        return []
    t = explain_template(bundle, settings.template)
    prompts = [TokensPrompt(prompt_token_ids=explain_prompt_ids(bundle, h, i, t, settings.max_history))
               for h, i in requests]
    outs = llm.generate(prompts, SamplingParams(**vllm_sampling_kwargs(settings)), use_tqdm=False,
                        lora_request=lora_request)
    return [clean_explanation(o.outputs[0].text) for o in outs]
