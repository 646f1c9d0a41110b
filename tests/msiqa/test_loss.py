from __future__ import annotations

import math

import pytest
import torch

from petctiqa.iqa.loss import msiqa_loss, ranking_loss


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_two_sample_loss_by_hand():
    pred, target = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    # pair (0, 1): (sigmoid(2) - sigmoid(-2))^2 = 0.761594^2 = 0.580026; 2/(n(n-1)) = 1
    assert ranking_loss(pred, target).item() == pytest.approx(0.5800257, abs=1e-6)
    # MSE = 1 -> 0.5 * 1 + 0.5 * 0.580026
    assert msiqa_loss(pred, target).item() == pytest.approx(0.7900128, abs=1e-6)


def test_three_sample_loss_matches_the_pair_sum():
    pred, target = [0.2, 0.5, 0.9], [0.1, 0.6, 0.8]
    pairs = [(0, 1), (0, 2), (1, 2)]
    rank = sum(
        (_sig(2 * (target[i] - target[j])) - _sig(2 * (pred[i] - pred[j]))) ** 2 for i, j in pairs
    ) * (2 / 6)
    mse = sum((p - t) ** 2 for p, t in zip(pred, target, strict=True)) / 3
    got = msiqa_loss(torch.tensor(pred), torch.tensor(target)).item()
    assert got == pytest.approx(0.5 * mse + 0.5 * rank, rel=1e-6)
    assert got == pytest.approx(0.0076045, abs=1e-6)


def test_ranking_loss_edge_cases_and_gradient():
    assert ranking_loss(torch.tensor([0.3]), torch.tensor([0.9])).item() == 0.0
    same = torch.tensor([0.1, 0.4, 0.7])
    assert ranking_loss(same, same).item() == 0.0
    pred = torch.tensor([0.5, 0.5], requires_grad=True)
    msiqa_loss(pred, torch.tensor([1.0, 0.0])).backward()
    assert pred.grad[0] < 0 < pred.grad[1]
