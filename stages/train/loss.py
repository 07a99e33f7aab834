"""torch's training loss, in a module of its own: the loop and the rank group (distributed.py, whose
DDP forward is this loss) both import it, and neither imports the other for it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stages.train.batches import Batch
from stages.train.data import IGNORE


def loss_sum(model, batch: Batch, device: str) -> tuple[torch.Tensor, int]:
    """Summed next-token loss over labelled positions. Logits are computed only where a label is:
    prompts and padding never reach the 152k-wide vocabulary projection."""
    ids, positions, labels = (torch.from_numpy(a).to(device) for a in (batch.ids, batch.positions, batch.labels))
    causal_lm = model.get_base_model()
    # No attention mask: the position ids mark where samples (and padding) start, see batches.py.
    hidden = causal_lm.model(input_ids=ids, position_ids=positions).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = causal_lm.lm_head(hidden[keep]).float()
    return F.cross_entropy(logits, targets[keep], reduction="sum"), int(keep.sum())
