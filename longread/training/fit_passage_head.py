"""Fit a reader's passage head (``longread/passage_head.py``): a linear map from the mean of a
passage's question-free states to the sentence retriever's embedding of that passage, so that the
passage prior needs no retriever pass over the document.

    python -m longread.training.fit_passage_head --model longread/default_model --data-dir ../shared/data

Training text: whole SQuAD v1.1 train articles (their paragraphs joined in order, so the states
carry the context a long document gives them), never the articles ``corpora.py`` holds out; no
question or answer is used. The map is ridge regression in closed form onto the retriever's unit
embeddings. Reported: the mean cosine between the head's and the retriever's embeddings of the
held-out articles' passages. ``eval/chunk_prior.py --encoders retriever,head`` measures what the
ranking loses or gains. Writes ``passage_head.safetensors`` into ``--model`` (or ``--out``) and
names it in the reader's config; the reader uses it with ``passage_encoder="head"``.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

from ..passage_head import PASSAGE_HEAD_NAME, PassageHead, pool_passages
from ..reader import CONFIG_NAME, DEFAULT_MODEL_DIR, Reader
from ..retrieval import passage_bounds
from .corpora import load_corpus


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="reader directory (its config is updated)")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--articles", type=int, default=100, help="SQuAD train articles to fit on")
    p.add_argument("--held-articles", type=int, default=20, help="held-out articles to report on")
    p.add_argument("--ridge", type=float, default=1e-3, help="L2 penalty, relative to the mean feature energy")
    p.add_argument("--out", default=None, help="write the head here instead of into --model")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def articles(records):
    """Article text: its paragraphs in order, joined by blank lines."""
    paragraphs = defaultdict(list)
    for r in records:
        if r.context not in paragraphs[r.article]:
            paragraphs[r.article].append(r.context)
    return ["\n\n".join(ps) for ps in paragraphs.values()]


@torch.inference_mode()
def features(reader: Reader, texts):
    """(mean question-free state of each passage (P, hidden), the retriever's embedding (P, d))."""
    xs, ts = [], []
    for text in texts:
        prepared = reader.prepare(text)
        bounds = passage_bounds(prepared.tokens)
        states = reader.question_free_states(prepared, 0, prepared.tokens.num_tokens)
        xs.append(pool_passages(states, bounds).cpu())
        ts.append(reader.retriever.passage_embeddings(prepared, 0, prepared.tokens.num_tokens, bounds))
        reader._cache.clear()
    return torch.cat(xs), torch.cat(ts)


def ridge(x: torch.Tensor, t: torch.Tensor, penalty: float):
    """argmin_W,b |x W + b - t|^2 + penalty * mean(diag(x'x)) |W|^2, in float64: (W (h, d), b (d,))."""
    xb = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    a = xb.T @ xb
    reg = penalty * a.diagonal()[:-1].mean()
    a[:-1, :-1] += reg * torch.eye(a.shape[0] - 1, dtype=a.dtype)
    w = torch.linalg.solve(a, xb.T @ t.double()).float()
    return w[:-1], w[-1]


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    reader = Reader.from_pretrained(args.model)
    reader.progress = False
    corpus = load_corpus(args.data_dir, ["squad"])
    train = articles(corpus.train["squad"])
    random.Random(args.seed).shuffle(train)
    held = articles(corpus.held["squad"])[: args.held_articles]
    t0 = time.time()
    x, t = features(reader, train[: args.articles])
    xh, th = features(reader, held)
    print(f"{len(x)} training passages from {min(args.articles, len(train))} articles, {len(xh)} held-out "
          f"passages, {time.time() - t0:.0f} s", flush=True)
    w, b = ridge(x, t, args.ridge)
    head = PassageHead(x.shape[1], t.shape[1])
    with torch.no_grad():
        head.proj.weight.copy_(w.T)
        head.proj.bias.copy_(b)
    with torch.inference_mode():
        cos_train = (head(x) * t).sum(-1).mean().item()
        cos_held = (head(xh) * th).sum(-1).mean().item()
    print(f"mean cosine to the retriever's embeddings: training {cos_train:.3f}, held-out {cos_held:.3f}")

    out = Path(args.out or args.model)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out / PASSAGE_HEAD_NAME))
    config_path = out / CONFIG_NAME
    if config_path.exists():
        meta = json.loads(config_path.read_text())
        meta["passage_head"] = {"file": PASSAGE_HEAD_NAME}
        meta.setdefault("training", {})["passage_head_fit"] = {
            "recipe": "longread.training.fit_passage_head", "articles": min(args.articles, len(train)),
            "passages": len(x), "ridge": args.ridge, "mean_cosine_train": round(cos_train, 4),
            "mean_cosine_heldout": round(cos_held, 4), "heldout_passages": len(xh)}
        config_path.write_text(json.dumps(meta, indent=2))
    print(f"wrote {out / PASSAGE_HEAD_NAME}")


if __name__ == "__main__":
    main()
