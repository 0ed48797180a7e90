"""Prepared documents, keyed by content, shared by every client, kept in LRU order under a
memory budget (an estimate of each prepared document's tensors and arrays)."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..errors import UnknownDocumentError


@dataclass
class Entry:
    id: str
    name: str
    kind: str
    status: str = "queued"              # queued -> preparing -> ready | failed
    stage: str = "waiting for the model"
    error: Optional[dict] = None        # {"type", "message", "status"} when failed
    prepared: Optional[object] = None   # PreparedDocument once ready
    created: float = field(default_factory=time.time)
    ready_at: Optional[float] = None
    nbytes: int = 0

    def info(self) -> dict:
        out = {"id": self.id, "name": self.name, "kind": self.kind, "status": self.status, "stage": self.stage,
               "error": self.error, "seconds": round((self.ready_at or time.time()) - self.created, 3)}
        p = self.prepared
        if p is not None:
            reading = p.reading
            out.update(tokens=p.num_tokens, characters=len(p.document.text), pages=len(p.document.page_starts),
                       chunks=p.tokens.num_chunks, cached_bytes=self.nbytes,
                       images=[{"index": im.index, "name": im.name, "width": im.size[0],
                                "height": im.size[1], "scale": im.scale, "page": im.page}
                               for im in (reading.images if reading is not None else [])])
        return out


def prepared_bytes(prepared) -> int:
    """Bytes held by a prepared document: its cached states and passage embeddings, token arrays,
    text and images."""
    total = 2 * len(prepared.document.text)
    for arr in (prepared.tokens.input_ids, prepared.tokens.offsets, prepared.tokens.chunk_starts,
                prepared.tokens.sentence_starts, prepared.inputs.token_chunk):
        total += np.asarray(arr).nbytes
    for t in (prepared.inputs.input_ids, prepared.inputs.position_ids, prepared.inputs.token_type_ids,
              prepared.inputs.chunk_ids, prepared.states):
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    for value in (prepared.passages or {}).values():
        for t in value:
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    if prepared.lexical is not None:
        total += prepared.lexical.nbytes
    if prepared.reading is not None:
        total += sum(len(im.png) for im in prepared.reading.images)
    return total


class DocumentStore:
    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._entries: "OrderedDict[str, Entry]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, doc_id: str) -> Entry:
        with self._lock:
            entry = self._entries.get(doc_id)
            if entry is None:
                raise UnknownDocumentError(f"no document {doc_id!r} here: upload it first (it may have been "
                                           "evicted from the cache to stay within the memory budget)")
            self._entries.move_to_end(doc_id)
            return entry

    def add(self, entry: Entry) -> tuple:
        """(entry, created): the existing entry for the same content unless it failed."""
        with self._lock:
            old = self._entries.get(entry.id)
            if old is not None and old.status != "failed":
                self._entries.move_to_end(entry.id)
                return old, False
            self._entries[entry.id] = entry
            return entry, True

    def remove(self, doc_id: str) -> None:
        with self._lock:
            if self._entries.pop(doc_id, None) is None:
                raise UnknownDocumentError(f"no document {doc_id!r} here")

    def account(self, entry: Entry) -> None:
        """Re-measure ``entry`` and evict least recently used ready documents past the budget
        (never ``entry`` itself, never one still being prepared)."""
        with self._lock:
            if entry.prepared is not None:
                entry.nbytes = prepared_bytes(entry.prepared)
            for doc_id in list(self._entries):
                if self.used() <= self.budget:
                    break
                other = self._entries[doc_id]
                if other is not entry and other.status in ("ready", "failed"):
                    del self._entries[doc_id]

    def used(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
