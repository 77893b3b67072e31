"""Classic baselines, one module each, all with the :class:`~.base.Recommender` interface.

Importing this package registers every model in :data:`BASELINES` (and its hyper-parameter dataclass in
:data:`BASELINE_OPTIONS`): adding a baseline touches its module, the import line below and its test.
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
from generative_rec.evaluation.baselines.base import (
    BASELINE_OPTIONS,
    BASELINES,
    Recommender,
    Validator,
    baseline_options,
    make,
    register,
)
from generative_rec.evaluation.baselines.tuning import TuneResult, tune

__all__ = ["BASELINES", "BASELINE_OPTIONS", "Recommender", "TuneResult", "Validator", "baseline_options", "make",
           "register", "tune"]
