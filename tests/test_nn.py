"""Tests of the shared torch pieces in ``methods/nn.py`` (independent re-computations and invariants)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods.nn import (
    IMAGE_ALONE,
    PAIRED,
    TEXT_ALONE,
    EarlyStopping,
    HashHead,
    InputAdapter,
    MissingModality,
    as_tensor,
    make_generator,
    minibatches,
    modality_dropout_plan,
    nt_xent,
    seeded,
    single_token_attention,
)


def _nt_xent_reference(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    """Textbook SimCLR NT-Xent, written as plain loops over the 2B anchors."""
    z = np.concatenate([a, b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2, n = len(z), len(a)
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        num = math.exp(z[i] @ z[pos] / tau)
        den = sum(math.exp(z[i] @ z[j] / tau) for j in range(n2) if j != i)
        total += -math.log(num / den)
    return total / n2


def test_nt_xent_matches_loop_reference():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    for tau in (0.5, 0.1, 2.0):
        got = nt_xent(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), tau).item()
        assert got == pytest.approx(_nt_xent_reference(a, b, tau), rel=1e-10)


def test_nt_xent_hand_worked_orthogonal_pairs():
    # a = b = identity rows: each anchor has cosine 1 with its positive and 0 with the two other vectors,
    # so every term is -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2) at tau = 0.5.
    a = torch.eye(2)
    assert nt_xent(a, a.clone(), 0.5).item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), rel=1e-6)


def test_nt_xent_is_scale_invariant_and_symmetric():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    base = nt_xent(a, b).item()
    assert nt_xent(3.0 * a, 0.2 * b).item() == pytest.approx(base, rel=1e-5)
    assert nt_xent(b, a).item() == pytest.approx(base, rel=1e-5)


@pytest.mark.parametrize(
    ("a", "b", "tau", "match"),
    [
        (torch.zeros(3, 2), torch.zeros(3, 4), 0.5, "equal shapes"),
        (torch.zeros(1, 2), torch.zeros(1, 2), 0.5, "at least 2"),
        (torch.zeros(3, 2), torch.zeros(3, 2), 0.0, "temperature"),
    ],
)
def test_nt_xent_rejects_bad_input(a, b, tau, match):
    with pytest.raises(ValueError, match=match):
        nt_xent(a, b, tau)


def test_hash_head_output_is_unit_norm_relaxed_code_with_ucmfh_shapes():
    head = HashHead(512, 16)
    assert (head.fc1.in_features, head.fc1.out_features, head.fc2.out_features) == (512, 4096, 16)
    assert head.dropout.p == 0.3
    head.eval()
    x = torch.randn(6, 512, generator=torch.Generator().manual_seed(1))
    h = head(x)
    assert h.shape == (6, 16)
    assert torch.allclose(h.norm(dim=1), torch.ones(6), atol=1e-6)
    assert h.abs().max() <= 1.0
    # The head L2-normalises its input first: scaling the input changes nothing.
    assert torch.allclose(head(5.0 * x), h, atol=1e-6)
    # Sign pattern equals that of the pre-normalisation tanh output.
    pre = head.fc2(torch.relu(head.fc1(torch.nn.functional.normalize(x, dim=1))))
    assert torch.equal(h >= 0, pre >= 0)


def test_input_adapter_identity_for_512_and_linear_otherwise():
    x = torch.randn(3, 512)
    ident = InputAdapter(512)
    assert isinstance(ident.proj, torch.nn.Identity) and torch.equal(ident(x), x)
    assert isinstance(InputAdapter(512, force_linear=True).proj, torch.nn.Linear)
    lin = InputAdapter(1280)
    assert isinstance(lin.proj, torch.nn.Linear) and lin(torch.randn(2, 1280)).shape == (2, 512)
    with pytest.raises(ValueError, match="width 1280"):
        lin(torch.randn(2, 384))


def test_missing_modality_fill():
    mm = MissingModality(4)
    with torch.no_grad():
        mm.missing_image.copy_(torch.arange(4.0))
        mm.missing_text.copy_(-torch.arange(4.0))
    img = torch.ones(3, 4)
    a, b = mm.fill(img, None)
    assert torch.equal(a, img) and torch.equal(b, mm.missing_text.expand(3, 4))
    a, b = mm.fill(None, img)
    assert torch.equal(a, mm.missing_image.expand(3, 4)) and torch.equal(b, img)
    with pytest.raises(ValueError, match="need image"):
        mm.fill(None, None)
    with pytest.raises(ValueError, match="rows"):
        mm.fill(torch.ones(2, 4), torch.ones(3, 4))


def _assembled(mm: MissingModality, img: torch.Tensor, txt: torch.Tensor, plan) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return mm.assemble(img, txt, plan)


def test_modality_dropout_one_drops_at_most_one_modality_at_rate_p():
    mm = MissingModality(2)
    with torch.no_grad():
        mm.missing_image.fill_(-7.0)
        mm.missing_text.fill_(-9.0)
    n = 20000
    img, txt = torch.ones(n, 2), torch.ones(n, 2)
    plan = modality_dropout_plan(n, 0.3, "one", make_generator(0))
    assert torch.equal(plan.source, torch.arange(n)) and torch.equal(plan.image_rows, plan.text_rows)
    a, b = _assembled(mm, img, txt, plan)
    drop_img, drop_txt = (a[:, 0] == -7.0), (b[:, 0] == -9.0)
    assert not (drop_img & drop_txt).any()
    assert (drop_img | drop_txt).float().mean().item() == pytest.approx(0.3, abs=0.015)
    assert drop_img.float().mean().item() == pytest.approx(0.15, abs=0.015)
    assert torch.equal(drop_img, plan.kind == TEXT_ALONE) and torch.equal(drop_txt, plan.kind == IMAGE_ALONE)
    # The same generator state gives the same plan; the draws are those of two rand(n) calls.
    again = modality_dropout_plan(n, 0.3, "one", make_generator(0))
    assert torch.equal(plan.kind, again.kind)
    g = make_generator(0)
    drop, which = torch.rand(n, generator=g) < 0.3, torch.rand(n, generator=g) < 0.5
    assert torch.equal(plan.kind == TEXT_ALONE, drop & which)
    none = modality_dropout_plan(n, 0.0, "one", make_generator(0))
    assert (none.kind == PAIRED).all() and none.source.numel() == n
    with pytest.raises(ValueError, match="mode"):
        modality_dropout_plan(4, 0.3, "both", make_generator(0))


def test_split_plan_builds_unimodal_rows():
    mm = MissingModality(2)
    with torch.no_grad():
        mm.missing_image.fill_(-7.0)
        mm.missing_text.fill_(-9.0)
    n = 400
    img = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 2)
    txt = img + 1000
    plan = modality_dropout_plan(n, 0.3, "split", make_generator(1))
    img2, txt2 = _assembled(mm, img, txt, plan)
    ri, rt = plan.image_rows, plan.text_rows
    split = (txt2[:n, 0] == -9.0).nonzero(as_tuple=True)[0]
    m = len(split)
    assert img2.shape == txt2.shape == (n + m, 2)
    assert 0.2 * n < m < 0.4 * n
    assert torch.equal(ri, torch.arange(n))
    # image side of pair i is row i, holding image i; text side of a split pair is an extra row holding
    # [missing_image ; text i]; text side of an unsplit pair is row i holding text i.
    assert torch.equal(img2[ri], img)
    assert torch.equal(txt2[rt], txt)
    assert (img2[n:] == -7.0).all()
    assert set(rt[split].tolist()) == set(range(n, n + m))
    unsplit = torch.ones(n, dtype=torch.bool)
    unsplit[split] = False
    assert torch.equal(rt[unsplit], torch.arange(n)[unsplit])
    # The split pairs are those of one rand(n) draw below p.
    expected = (torch.rand(n, generator=make_generator(1)) < 0.3).nonzero(as_tuple=True)[0]
    assert torch.equal(split, expected)
    assert torch.equal(plan.kind, torch.cat([torch.where(unsplit, PAIRED, IMAGE_ALONE), torch.full((m,), TEXT_ALONE)]))
    same = modality_dropout_plan(n, 0.0, "split", make_generator(1))
    assert torch.equal(same.source, torch.arange(n)) and torch.equal(same.text_rows, torch.arange(n))


def test_single_token_attention_equals_multihead_attention_on_length_one_sequences():
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(8, 2, dropout=0.25, batch_first=True).eval()
    x = torch.randn(5, 8)
    ref = attn(x.unsqueeze(1), x.unsqueeze(1), x.unsqueeze(1), need_weights=False)[0].squeeze(1)
    torch.testing.assert_close(single_token_attention(attn, x), ref, rtol=1e-5, atol=1e-6)
    # Without dropout the training-mode functions agree too.
    attn0 = torch.nn.MultiheadAttention(8, 2, dropout=0.0, batch_first=True).train()
    ref0 = attn0(x.unsqueeze(1), x.unsqueeze(1), x.unsqueeze(1), need_weights=False)[0].squeeze(1)
    torch.testing.assert_close(single_token_attention(attn0, x), ref0, rtol=1e-5, atol=1e-6)


def test_single_token_attention_dropout_zeroes_or_rescales_whole_heads():
    """Training mode: the single attention weight of each (item, head) is dropped with p or scaled by 1/(1-p)."""
    torch.manual_seed(1)
    d, h, p, n = 8, 2, 0.25, 4000
    attn = torch.nn.MultiheadAttention(d, h, dropout=p, batch_first=True).train()
    with torch.no_grad():  # out_proj = identity: the output is the (masked) value projection itself
        attn.out_proj.weight.copy_(torch.eye(d))
        attn.out_proj.bias.zero_()
    x = torch.randn(n, d)
    v = torch.nn.functional.linear(x, attn.in_proj_weight[2 * d :], attn.in_proj_bias[2 * d :]).detach()
    out = single_token_attention(attn, x).detach()
    ratio = (out / v).view(n, h, d // h)
    scale = ratio[:, :, :1]
    assert torch.allclose(ratio, scale.expand_as(ratio), atol=1e-4)  # one factor per head
    assert set(torch.round(scale * 1e4).unique().tolist()) <= {0.0, round(1e4 / (1 - p))}
    assert (scale == 0).float().mean().item() == pytest.approx(p, abs=0.02)


def test_minibatches_cover_each_item_once_and_are_seeded():
    batches = minibatches(10, 4, make_generator(5))
    flat = torch.cat(batches)
    assert sorted(flat.tolist()) == list(range(10)) and [len(b) for b in batches] == [4, 4, 2]
    assert all(torch.equal(x, y) for x, y in zip(batches, minibatches(10, 4, make_generator(5))))
    assert not torch.equal(flat, torch.cat(minibatches(10, 4, make_generator(6))))
    # A final batch of one item is dropped (a contrastive loss needs two).
    assert [len(b) for b in minibatches(9, 4, None)] == [4, 4]
    assert torch.equal(torch.cat(minibatches(8, 4, None)), torch.arange(8))


def test_seeded_is_reproducible_and_restores_caller_rng():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        x1 = torch.rand(4)
    with seeded(7):
        x2 = torch.rand(4)
    assert torch.equal(x1, x2)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream is untouched


def test_early_stopping_tracks_best_and_restores_it():
    model = torch.nn.Linear(1, 1, bias=False)
    stop = EarlyStopping(patience=2, min_delta=0.1)
    decisions, buffers = [], set()
    for epoch, loss in enumerate([5.0, 4.0, 3.95, 3.5, 3.45, 3.44], start=1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        decisions.append(stop.update(loss, model))
        buffers.add(id(stop.best_state["weight"]))
        assert stop.best_state["weight"].data_ptr() != model.weight.data_ptr()  # a copy, never an alias
    assert len(buffers) == 1  # later snapshots reuse the first one's buffers
    # 3.95 is not 0.1 better than 4.0; 3.5 is; 3.45 and 3.44 are not -> stop after epoch 6.
    assert decisions == [False, False, False, False, False, True]
    assert (stop.best, stop.best_epoch, stop.epochs) == (3.5, 4, 6)
    stop.restore(model)
    assert model.weight.item() == 4.0
    with pytest.raises(ValueError, match="NaN"):
        stop.update(float("nan"))
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(0)


def test_as_tensor_rejects_non_finite():
    assert as_tensor(np.ones((2, 3), dtype=np.float64), "cpu").dtype == torch.float32
    with pytest.raises(ValueError, match="train.image"):
        as_tensor(np.array([[1.0, np.nan]]), "cpu", "train.image")
