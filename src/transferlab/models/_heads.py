"""The new head a regime puts on a (possibly truncated) backbone, and the network they make."""

from __future__ import annotations

import torch
from torch import nn

from transferlab.models._backbone import Backbone


class Head(nn.Module):
    """Global average pooling (for feature maps), dropout, then a linear classifier, or with
    ``hidden`` a small MLP (linear-ReLU-dropout-linear)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0, hidden: int | None = None):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = (
            None if hidden is None else nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout))
        )
        self.fc = nn.Linear(in_features if hidden is None else hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))
        x = self.dropout(x)
        if self.hidden is not None:
            x = self.hidden(x)
        return self.fc(x)


class TransferNet(nn.Module):
    """A (possibly truncated) backbone followed by a new head."""

    def __init__(self, backbone: Backbone, head: Head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
