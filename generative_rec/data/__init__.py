"""Data: readers -> validated tables -> prepared folder (HF datasets) -> RecData with the split."""

from generative_rec.data.dataset import Example, RecData
from generative_rec.data.prepare import PrepareConfig, prepare

__all__ = ["Example", "PrepareConfig", "RecData", "prepare"]
