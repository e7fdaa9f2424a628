"""A small real torch classifier that follows the batch job's model protocol (`.version`, `.predict(images)`),
saved to and loaded from a file; `delay_s` slows each prediction so a test can kill the job part-way."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

CATEGORIES = ["tops", "shirts", "casual_shoes", "handbags", "boots"]


class ToyClassifier:
    def __init__(self, net: nn.Module, version: str, delay_s: float = 0.0):
        self.net, self.version, self.delay_s, self.categories = net.eval(), version, delay_s, list(CATEGORIES)

    def predict(self, images):
        x = torch.stack([torch.from_numpy(np.asarray(im.convert("L").resize((28, 28)), dtype=np.float32) / 255)
                         for im in images]).unsqueeze(1)
        with torch.inference_mode():
            probs = torch.softmax(self.net(x), dim=1)
        time.sleep(self.delay_s)
        top, idx = probs.max(dim=1)
        return [self.categories[i] for i in idx.tolist()], top.numpy()


def build_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 5))


def save(path, seed: int = 0, delay_s: float = 0.0) -> None:
    torch.save({"state_dict": build_net(seed).state_dict(), "version": f"toy-{seed}", "delay_s": delay_s}, path)


def load(path) -> ToyClassifier:
    saved = torch.load(path, map_location="cpu")
    net = build_net()
    net.load_state_dict(saved["state_dict"])
    return ToyClassifier(net, saved["version"], saved["delay_s"])
