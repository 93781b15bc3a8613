"""Assertions whose failure messages explain themselves."""
import torch


def assert_close_verbose(actual, expected, *, atol: float, rtol: float = 0.0, what: str = "tensor"):
    """Like ``torch.testing.assert_close`` but reports mismatch count, max/mean diff and NaN/inf disagreement."""
    actual = torch.as_tensor(actual).detach().float().cpu()
    expected = torch.as_tensor(expected).detach().float().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    nonfinite = torch.isfinite(actual) != torch.isfinite(expected)
    diff = (actual - expected).abs()
    diff = torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff))
    bad = (diff > atol + rtol * expected.abs()) | nonfinite
    if bad.any():
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{bad.numel()} elements differ (atol={atol:g}, rtol={rtol:g}); "
            f"max diff {diff.max().item():.3g}, mean diff {diff.mean().item():.3g}; "
            f"{int(nonfinite.sum())} NaN/inf disagreements; first at {idx}: "
            f"{actual[idx].item():.6g} vs {expected[idx].item():.6g}"
        )
