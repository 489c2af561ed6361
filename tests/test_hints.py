"""Hint canvases: chunking, reveal counts, free tail, answer hiding, released-code mode, seeds."""

from __future__ import annotations

import pytest
import torch

from igpo.hints import (
    HintConfig,
    build_hint_batch,
    build_hint_canvas,
    cut_chunks,
    encode_trace,
    find_answer_span,
    hinted_positions,
    sample_etas,
    spread_positions,
)

MASK = 99
TRACE = list(range(10, 30))  # 20 tokens; with chunks of exactly 5: (0,5) (5,10) (10,15) (15,20)
GEN = 25  # tail_free 5 leaves exactly the 20 trace positions
FIXED5 = {"min_chunk": 5, "max_chunk": 5, "tail_free": 5}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def revealed_chunks(canvas: torch.Tensor) -> list[int]:
    """Indices of the 5-token chunks a canvas reveals (checking they are whole and in place)."""
    out = []
    for idx in range(4):
        part = canvas[5 * idx : 5 * idx + 5]
        if (part != MASK).any():
            assert part.tolist() == TRACE[5 * idx : 5 * idx + 5]
            out.append(idx)
    return out


def test_chunk_lengths_within_range_and_consecutive():
    for seed in range(20):
        chunks = cut_chunks(103, 5, 10, gen(seed))
        assert chunks[0][0] == 0
        assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))
        assert all(5 <= e - s <= 10 for s, e in chunks)
        assert 103 - chunks[-1][1] < 5  # only a piece shorter than min_chunk is dropped


@pytest.mark.parametrize(("eta", "count"), [(0.0, 0), (0.2, 0), (0.25, 1), (0.5, 2), (0.6, 2), (1.0, 4)])
def test_revealed_share_is_floor_eta_n(eta, count):
    cfg = HintConfig.paper(hide_answer=False, **FIXED5)
    for seed in range(5):
        canvas = build_hint_canvas(TRACE, GEN, cfg, MASK, eta, gen(seed))
        assert len(revealed_chunks(canvas)) == count


def test_tail_stays_free_and_trace_is_truncated():
    cfg = HintConfig.paper(hide_answer=False, min_chunk=5, max_chunk=10, tail_free=30)
    long_trace = list(range(200, 400))
    canvas = build_hint_canvas(long_trace, 64, cfg, MASK, 1.0, gen())
    assert (canvas[-30:] == MASK).all()
    hinted = hinted_positions(canvas, MASK)
    assert hinted[:5].all()  # full hints start at position 0
    assert torch.equal(canvas[hinted], torch.tensor(long_trace[:34])[hinted[:34]])


def test_answer_never_revealed_with_hide_answer():
    cfg = HintConfig.paper(hide_answer=True, **FIXED5)
    for seed in range(10):
        canvas = build_hint_canvas(TRACE, GEN, cfg, MASK, 1.0, gen(seed), answer_span=(12, 14))
        assert revealed_chunks(canvas) == [0, 1, 3]  # full hints except the answer's chunk
    # floor(0.5 * 4) = 2 chunks are still revealed, drawn from the three eligible ones
    for seed in range(10):
        canvas = build_hint_canvas(TRACE, GEN, cfg, MASK, 0.5, gen(seed), answer_span=(12, 14))
        assert len(chosen := revealed_chunks(canvas)) == 2 and 2 not in chosen


def test_released_mode_always_reveals_last_chunk():
    cfg = HintConfig.paper(hide_answer=False, reveal_last_chunk=True, **FIXED5)
    canvas = build_hint_canvas(TRACE, GEN, cfg, MASK, 0.0, gen(), answer_span=(15, 20))
    assert revealed_chunks(canvas) == [3]  # the answer is revealed: hide_answer is off
    for seed in range(10):
        chosen = revealed_chunks(build_hint_canvas(TRACE, GEN, cfg, MASK, 0.25, gen(seed)))
        assert 3 in chosen and len(chosen) in (1, 2)  # the 1 random chunk, plus the last one


def test_hide_answer_wins_over_reveal_last_chunk():
    cfg = HintConfig.paper(hide_answer=True, reveal_last_chunk=True, **FIXED5)
    canvas = build_hint_canvas(TRACE, GEN, cfg, MASK, 0.0, gen(), answer_span=(16, 18))
    assert revealed_chunks(canvas) == []
    canvas = build_hint_canvas(TRACE, GEN, cfg, MASK, 0.0, gen(), answer_span=(2, 3))
    assert revealed_chunks(canvas) == [3]


def test_full_hints_reveal_every_chunk():
    cfg = HintConfig.paper(eta_low=1.0, eta_high=1.0, hide_answer=False, **FIXED5)
    assert sample_etas(3, cfg, gen()) == [1.0, 1.0, 1.0]
    batch = build_hint_batch(TRACE, 3, GEN, cfg, MASK, gen())
    assert batch.shape == (3, GEN)
    assert (batch[:, :20] == torch.tensor(TRACE)).all() and (batch[:, 20:] == MASK).all()


def test_sample_etas_range_and_disabled():
    etas = sample_etas(100, HintConfig.paper(), gen())
    assert all(0.2 <= e <= 0.6 for e in etas) and len(set(etas)) == 100
    assert sample_etas(4, HintConfig.paper(enabled=False), gen()) == [0.0] * 4


def test_same_seed_same_canvas_different_seed_different():
    cfg = HintConfig.paper()
    trace = list(range(1000, 1400))
    a = build_hint_batch(trace, 8, 256, cfg, MASK, gen(7))
    b = build_hint_batch(trace, 8, 256, cfg, MASK, gen(7))
    c = build_hint_batch(trace, 8, 256, cfg, MASK, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({tuple(row.tolist()) for row in a}) == 8  # each row its own eta and chunking


def test_batch_rows_use_given_etas_and_answer_ids():
    cfg = HintConfig.paper(**FIXED5)
    batch = build_hint_batch(TRACE, 2, GEN, cfg, MASK, gen(), answer_ids=[22, 23], etas=[0.0, 1.0])
    assert (batch[0] == MASK).all()
    assert revealed_chunks(batch[1]) == [0, 1, 3]  # tokens 22, 23 sit at positions 12, 13
    with pytest.raises(ValueError, match="etas"):
        build_hint_batch(TRACE, 3, GEN, cfg, MASK, gen(), etas=[0.5])


def test_disabled_gives_all_masks():
    canvas = build_hint_canvas(TRACE, GEN, HintConfig.paper(enabled=False), MASK, 1.0, gen())
    assert (canvas == MASK).all()


def test_spread_positions_stretch_and_cap_gaps():
    cfg = HintConfig.paper(spread=True)
    # factor = clip(40 / 20, 1, 1.5) = 1.5: gap 5 -> 7; first start 5 -> 7
    assert spread_positions([(0, 5), (10, 15)], 20, 40, cfg) == [(0, 5), (12, 17)]
    assert spread_positions([(5, 10)], 20, 40, cfg) == [(7, 12)]
    capped = HintConfig.paper(spread=True, max_gap=3)
    assert spread_positions([(0, 5), (10, 15)], 20, 40, capped) == [(0, 5), (8, 13)]
    # factor 1.4; past the effective length a chunk is cut, then the rest are dropped
    chunks = [(0, 5), (10, 15), (16, 18)]
    assert spread_positions(chunks, 10, 14, cfg) == [(0, 5), (12, 14)]


def test_spread_canvas_places_chunk_tokens():
    cfg = HintConfig.paper(spread=True, hide_answer=False, min_chunk=5, max_chunk=5, tail_free=5)
    canvas = build_hint_canvas(TRACE, 45, cfg, MASK, 1.0, gen())  # all chunks: no gaps to stretch
    assert canvas[:20].tolist() == TRACE and (canvas[20:] == MASK).all()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eta_low", -0.1),
        ("eta_low", 1.5),
        ("eta_high", 0.1),
        ("eta_high", 1.2),
        ("min_chunk", 0),
        ("max_chunk", 4),
        ("tail_free", -1),
        ("max_spread", 0.5),
        ("max_gap", -1),
    ],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        HintConfig(**{field: value})


def test_bad_call_arguments():
    with pytest.raises(ValueError, match="eta"):
        build_hint_canvas(TRACE, GEN, HintConfig(), MASK, 1.5, gen())
    with pytest.raises(ValueError, match="mask_id"):
        build_hint_canvas([MASK] * 20, GEN, HintConfig(), MASK, 0.5, gen())


def test_find_answer_span_last_occurrence():
    assert find_answer_span([1, 7, 8, 2, 7, 8, 3], [7, 8]) == (4, 6)
    assert find_answer_span([1, 2, 3], [4]) is None
    assert find_answer_span([1, 2, 3], []) is None


def test_encode_trace_strips_prefill_and_finds_box():
    from igpo.models.tokenizer import build_word_tokenizer

    tok = build_word_tokenizer(["so", "it", "is", "72", "The", "answer", ":", "\\boxed{", "}"])
    trace = "<reasoning>\nso it is 72\n</reasoning>\n<answer>\n\\boxed{72}\n</answer>"
    enc = encode_trace(tok, trace)
    assert tok.convert_ids_to_tokens(enc.ids[:2]) == ["so", "it"]
    start, end = enc.answer_span
    assert tok.convert_ids_to_tokens(enc.ids[start:end]) == ["\\boxed{", "72", "}"]
    metamath = encode_trace(tok, "<reasoning>\nso it is 72\nThe answer is: 72")
    start, end = metamath.answer_span
    assert tok.convert_ids_to_tokens(metamath.ids[start:end]) == ["The", "answer", "is", ":", "72"]
    plain = encode_trace(tok, "so it is 72 so", answer="72")
    assert plain.answer_span == (3, 4)
