"""ONNX export: the exported graph computes what `TrainedPolicy.predict` does, clipping included."""

import numpy as np
import pytest
import torch

from rlpg.checkpoint import load_policy
from rlpg.export import export_onnx


@pytest.mark.parametrize("clip_actions", [True, False])
def test_onnx_actions_match_predict_outside_the_bounds(out_of_bounds_checkpoint, tmp_path, clip_actions):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = export_onnx(out_of_bounds_checkpoint, tmp_path / "pi.onnx", clip_actions=clip_actions)
    policy = load_policy(out_of_bounds_checkpoint)
    obs = torch.randn(64, 3, generator=torch.Generator().manual_seed(1)).numpy()
    raw = policy.predict(obs, clip=False)
    low, high = policy.policy.action_space.low, policy.policy.action_space.high
    assert (raw < low).any() and (raw > high).any()  # the mean leaves the bounds on both sides
    onnx_action = ort.InferenceSession(str(out)).run(None, {"obs": obs})[0]
    expected = policy.predict(obs, clip=clip_actions)
    np.testing.assert_allclose(onnx_action, expected, rtol=1e-5, atol=1e-5)
    if clip_actions:
        assert (onnx_action >= low).all() and (onnx_action <= high).all()
        assert (onnx_action == low).any() and (onnx_action == high).any()  # the bounds themselves, exactly


def test_export_says_nothing_but_its_result(out_of_bounds_checkpoint, tmp_path, capfd):
    """torch's exporter warns about every torchvision operator when torchvision is absent, and its pytree code
    raises a FutureWarning: neither is about the user's model, so neither reaches the user's terminal."""
    pytest.importorskip("onnxscript")
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(out_of_bounds_checkpoint, tmp_path / "quiet.onnx")
    err = capfd.readouterr().err
    assert "torchvision" not in err and "Warning" not in err, err
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    assert (tmp_path / "quiet.onnx").stat().st_size > 0
