"""CLAM-SB pins MOTCat's CLAM_SB ("small", gated) layer list, init, and what its instance loss does on survival."""

import math

import pytest
import torch
import torch.nn.functional as F

from models import create_model


def test_parameter_count_from_the_reference_layer_list():
    expected = (
        1024 * 256 + 256  # fc, size "small" = [1024, 256, 256]
        + 2 * (256 * 256 + 256) + 256 + 1  # gated attention: a, b (256 -> 256), c (256 -> 1)
        + 256 * 4 + 4  # bag classifier: hazard logits per bin
        + 4 * (256 * 2 + 2)  # one instance classifier per bin (n_classes = 4)
    )
    model = create_model("clam_sb", n_bins=4)
    assert sum(p.numel() for p in model.parameters()) == expected == 397_325


def test_every_linear_is_xavier_normal_with_zero_bias():
    torch.manual_seed(0)
    model = create_model("clam_sb")
    fc = model.fc[0].weight
    assert abs(fc.std().item() - math.sqrt(2.0 / (1024 + 256))) < 2e-3  # xavier-normal, not kaiming-uniform
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, torch.nn.Linear))


def _instance_loss_by_hand(model, wsi, label, k=8):
    """CLAM's inst_eval for the label's classifier: top-k attended = 1, bottom-k = 0, mean CE."""
    h = model.fc(wsi)
    weights = torch.softmax(model.attention(h).squeeze(-1), dim=-1)
    top, bottom = weights.topk(k).indices, (-weights).topk(k).indices
    logits = model.instance_classifiers[label](torch.cat([h[top], h[bottom]]))
    return F.cross_entropy(logits, torch.cat([torch.ones(k), torch.zeros(k)]).long())


@pytest.mark.parametrize("label", [0, 3])
def test_instance_loss_is_clam_inst_eval_for_the_patients_bin_weighted_against_the_nll(label):
    model = create_model("clam_sb").eval()
    wsi = torch.randn(40, 1024)
    with torch.no_grad():
        got = model.label_loss(model(wsi=wsi), torch.tensor([label]))
        want = _instance_loss_by_hand(model, wsi, label)
    torch.testing.assert_close(got, (0.3 / 0.7) * want.view(1))


def test_only_the_patients_bin_classifier_learns():
    model = create_model("clam_sb").eval()
    model.label_loss(model(wsi=torch.randn(30, 1024)), torch.tensor([2])).sum().backward()
    grads = [c.weight.grad.abs().sum().item() for c in model.instance_classifiers]
    assert grads[2] > 0 and grads[0] == grads[1] == grads[3] == 0


def test_a_bag_shorter_than_k_uses_every_patch_on_both_sides():
    """The reference's topk fails below 8 patches; here top and bottom are the whole bag, each patch labelled
    1 and 0 at once, so no classifier gets its instance loss below log 2."""
    model = create_model("clam_sb").eval()
    with torch.no_grad():
        out = model(wsi=torch.randn(3, 1024))
        model.instance_classifiers[1].bias.copy_(torch.tensor([-5.0, 5.0]))  # any classifier: the floor holds
        loss = model.label_loss(out, torch.tensor([1]))
    assert out.aux["top"].shape == (1, 3, 256) and out.aux["valid"].all()
    assert loss.item() >= (0.3 / 0.7) * math.log(2) - 1e-6
