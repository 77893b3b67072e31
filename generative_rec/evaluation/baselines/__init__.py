"""Classic baselines, one module each, all with the :class:`~.base.Recommender` interface.

Importing this package registers every model in :data:`BASELINES`.
"""

from generative_rec.evaluation.baselines import (  # noqa: F401  (registration)
    bpr,
    content_knn,
    itemknn,
    lightgcn,
    mf_llm_init,
    pop,
    sasrec,
)
from generative_rec.evaluation.baselines.base import BASELINES, Recommender, Validator, make, register
from generative_rec.evaluation.baselines.tuning import TuneResult, tune

__all__ = ["BASELINES", "Recommender", "TuneResult", "Validator", "make", "register", "tune"]
