"""SQuAD exact match and F1 (text answers), their token-span form used during training, and the
calibration (ECE) and no-answer discrimination (ROC AUC) measures."""
from __future__ import annotations

import collections
import re
import string
from typing import Sequence, Tuple

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (the SQuAD convention)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def text_em_f1(prediction: str, golds: Sequence[str]) -> Tuple[float, float]:
    """Best EM and F1 of a predicted answer against any of the gold answers."""
    best_em, best_f1 = 0.0, 0.0
    pred_toks = normalize_answer(prediction).split()
    for gold in golds:
        gold_toks = normalize_answer(gold).split()
        em = float(pred_toks == gold_toks)
        common = collections.Counter(pred_toks) & collections.Counter(gold_toks)
        same = sum(common.values())
        if not pred_toks or not gold_toks:
            f1 = float(pred_toks == gold_toks)
        elif same == 0:
            f1 = 0.0
        else:
            p, r = same / len(pred_toks), same / len(gold_toks)
            f1 = 2 * p * r / (p + r)
        best_em, best_f1 = max(best_em, em), max(best_f1, f1)
    return best_em, best_f1


def squad_em_f1(pred: Tuple[int, int], gold: Tuple[int, int], token_level: bool = True) -> Tuple[float, float]:
    """EM/F1 of two inclusive token spans by their overlap."""
    overlap = max(0, min(pred[1], gold[1]) - max(pred[0], gold[0]) + 1)
    if overlap == 0:
        return float(pred == gold), 0.0
    p = overlap / (pred[1] - pred[0] + 1)
    r = overlap / (gold[1] - gold[0] + 1)
    return float(pred == gold), 2 * p * r / (p + r)


def expected_calibration_error(conf, right, bins: int = 10):
    """Expected calibration error of confidences ``conf`` (n,) in [0, 1] against outcomes ``right``
    (n,) bool, over ``bins`` equal-width bins; and the bins (mean conf, fraction right, count)."""
    import numpy as np

    conf, right = np.asarray(conf, dtype=np.float64), np.asarray(right, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    table, total = [], 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            table.append((float(conf[m].mean()), float(right[m].mean()), int(m.sum())))
            total += m.sum() / len(conf) * abs(conf[m].mean() - right[m].mean())
    return float(total), table


def roc_auc(scores, positive) -> float:
    """Area under the ROC curve of ``scores`` (n,) for telling ``positive`` (n,) bool cases from the
    rest: the chance that a random positive scores above a random negative, ties counting half
    (the Mann-Whitney statistic, from average ranks). NaN when either class is empty."""
    import numpy as np

    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):                  # average ranks (1-based) over runs of equal scores
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
