"""MS-IQA loss (paper Sec. 2.5): ``lambda1 * MSE + lambda2 * pairwise ranking loss``.

L_rank = 2 / (n (n - 1)) * sum_{i<j} (sigmoid(alpha (t_i - t_j)) - sigmoid(alpha (y_i - y_j)))^2
over the n samples of a batch, with predictions y and targets t on the normalised [0, 1] scale.
The pair term is symmetric in (i, j) and zero on the diagonal, so the sum over i < j equals half
the sum over the full n x n matrix: no loops, no index lists.
"""

from __future__ import annotations

import torch

ALPHA = 2.0
LAMBDA_MSE = 0.5
LAMBDA_RANK = 0.5


def ranking_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """Mean squared difference of pairwise sigmoid preferences over all pairs (0 when n < 2)."""
    pred = pred.float().reshape(-1)
    target = target.float().reshape(-1)
    n = pred.numel()
    if n < 2:
        return pred.sum() * 0.0
    p_pred = torch.sigmoid(alpha * (pred[:, None] - pred[None, :]))
    p_true = torch.sigmoid(alpha * (target[:, None] - target[None, :]))
    return ((p_true - p_pred) ** 2).sum() / (n * (n - 1))


def msiqa_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    alpha: float = ALPHA,
    lambda_mse: float = LAMBDA_MSE,
    lambda_rank: float = LAMBDA_RANK,
) -> torch.Tensor:
    """``lambda_mse * MSE(pred, target) + lambda_rank * ranking_loss`` (computed in float32)."""
    pred32 = pred.float().reshape(-1)
    target32 = target.float().reshape(-1)
    mse = torch.mean((pred32 - target32) ** 2)
    return lambda_mse * mse + lambda_rank * ranking_loss(pred32, target32, alpha)
