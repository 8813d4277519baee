"""Sentiment scores: normalized answers, and text scored offline when no score was given.

Text is scored with VADER (its compound score, -1..1): a pure function of the text. The analyzer loads
its lexicon when built, so it is built once, on first use, and reused.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from shared.events import SentimentData


@lru_cache(maxsize=1)
def _analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # type: ignore[import-untyped]

    return SentimentIntensityAnalyzer()


@lru_cache(maxsize=256)   # scoring a text is costly, and canned answers ("Great support!") recur
def text_sentiment(text: str) -> float:
    """VADER's compound score of `text`, in -1..1."""
    return float(_analyzer().polarity_scores(text)["compound"])


def answer_value(data: SentimentData) -> float:
    """What one answer says, on -1..1.

    NPS counts the NPS way: promoters (9-10) +1, passives (7-8) +0.5, detractors (0-6) from -1 up to
    -0.2, so a 6 is not mistaken for a mildly positive answer. CSAT 5..1 maps to +1..-1 in steps of 0.5;
    other sources keep their -1..1 score; text without a score is scored offline.
    """
    if data.score is None:
        return text_sentiment(data.text or "")
    if data.source == "nps":
        if data.score >= 9:
            return 1.0
        if data.score >= 7:
            return 0.5
        return -1.0 + 0.8 * data.score / 6.0
    score = data.normalized_score()
    return 0.0 if score is None else score
