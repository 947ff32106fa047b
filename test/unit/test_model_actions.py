"""Action tokenizer (both id mappings), un-normalization, dataset keys, gripper options."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.model.action_tokenizer import (
    ActionTokenError,
    ActionTokenizer,
    extra_tokens_tokenizer,
    last_ids_tokenizer,
)
from vla_ros.model.normalization import (
    GripperOptions,
    UnnormKeyError,
    action_stats,
    normalize,
    select_unnorm_key,
    unnormalize,
)
from vla_ros.model.tiny import cached_tiny_checkpoint
from vla_ros.model.tokenizer import TextTokenizer

OPENVLA = last_ids_tokenizer(32064, 64)


def test_openvla_action_range():
    assert OPENVLA.vocab_end == 32000
    assert OPENVLA.first_id == 31744
    assert OPENVLA.token_ids[0] == 31744 and OPENVLA.token_ids[-1] == 31999 and len(OPENVLA.token_ids) == 256
    assert len(OPENVLA.bin_centers) == 255


def test_edge_bins():
    width = 2.0 / 255
    # id 31999 (vocab - 1) -> d = 0 -> lowest centre; id 31744 and 31745 -> top centre
    assert OPENVLA.decode([31999])[0] == pytest.approx(-1.0 + width / 2)
    assert OPENVLA.decode([31745])[0] == pytest.approx(1.0 - width / 2)
    assert OPENVLA.decode([31744])[0] == OPENVLA.decode([31745])[0]
    assert OPENVLA.encode([-1.0])[0] == 31999
    assert OPENVLA.encode([1.0])[0] == 31744  # digitize(1.0) = 256: the lowest id
    assert OPENVLA.encode([5.0])[0] == 31744 and OPENVLA.encode([-7.0])[0] == 31999  # clipped
    assert OPENVLA.encode([0.0])[0] == 32000 - 128
    assert OPENVLA.decode([32000 - 128])[0] == pytest.approx(0.0)


def test_ids_round_trip():
    ids = OPENVLA.token_ids[1:]  # every id but the lowest decodes to a distinct centre
    assert np.array_equal(OPENVLA.encode(OPENVLA.decode(ids)), ids)
    assert len(set(OPENVLA.decode(ids).tolist())) == 255


@given(st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=1, max_size=16))
def test_actions_round_trip_within_one_bin(values):
    a = np.asarray(values)
    back = OPENVLA.decode(OPENVLA.encode(a))
    assert np.all(np.abs(back - a) <= 2.0 / 255 + 1e-12)


def test_out_of_range_ids_are_errors():
    for bad in ([31743], [32000], [0], [31999, 40000], [-1]):
        with pytest.raises(ActionTokenError, match="not action tokens"):
            OPENVLA.decode(bad)
    assert OPENVLA.is_action(np.array([31743, 31744, 31999, 32000])).tolist() == [False, True, True, False]


def test_argmax_is_restricted_to_action_ids():
    logits = np.zeros((1, 32064), dtype=np.float32)
    logits[0, 29871] = 100.0  # a non-action id wins the full argmax
    logits[0, 31800] = 1.0
    assert int(OPENVLA.argmax(logits)[0]) == 31800
    logits[0, 31900] = np.nan
    with pytest.raises(FloatingPointError, match="NaN"):
        OPENVLA.argmax(logits)
    with pytest.raises(ActionTokenError):
        OPENVLA.argmax(np.zeros((1, 31900), dtype=np.float32))  # logits too short for the action ids


def test_encode_rejects_nan():
    with pytest.raises(ValueError, match="non-finite"):
        OPENVLA.encode([np.nan])


def test_extra_tokens_mapping_on_minivla_tokenizer():
    tok = TextTokenizer(cached_tiny_checkpoint(family="minivla"))
    act = extra_tokens_tokenizer(tok)
    assert act.vocab_end == len(tok)
    assert tok.id_to_token(act.first_id) == "<|extra_0|>"
    assert tok.id_to_token(act.vocab_end - 1) == "<|extra_255|>"
    # "<|extra_255|>" is bin 0 (the lowest action), as in openvla-mini
    assert act.decode([tok.token_to_id("<|extra_255|>")])[0] == pytest.approx(-1 + 1 / 255)
    # the OpenVLA tokenizer has no extra tokens: clear error
    with pytest.raises(ActionTokenError, match="extra"):
        extra_tokens_tokenizer(TextTokenizer(cached_tiny_checkpoint()))


def test_tokenizer_needs_enough_vocabulary():
    with pytest.raises(ValueError):
        ActionTokenizer(100, 256)


NORM = {
    "bridge_orig": {"action": {"q01": [-0.1, -0.2, 0.0, -1.0, -1.0, -1.0, 0.0],
                               "q99": [0.1, 0.2, 0.4, 1.0, 1.0, 3.0, 1.0],
                               "mask": [True, True, True, True, True, True, False]}},
    "fractal20220817_data": {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7}},
}


def test_unnormalize_hand_computed():
    stats = action_stats(NORM, "bridge_orig")
    a = np.array([0.0, 1.0, -1.0, 0.5, -0.5, 0.25, 0.996])
    out = unnormalize(a, stats)
    # 0.5 (a + 1) (q99 - q01) + q01, gripper untouched
    expected = [0.0, 0.2, 0.0, 0.5, -0.5, 0.5 * 1.25 * 4.0 - 1.0, 0.996]
    assert out.tolist() == pytest.approx(expected)
    assert normalize(out, stats) == pytest.approx(a)
    no_mask = action_stats(NORM, "fractal20220817_data")
    assert unnormalize(np.full(7, -1.0), no_mask).tolist() == [0.0] * 7  # no mask: every dim


def test_unnorm_key_errors_list_the_keys():
    with pytest.raises(UnnormKeyError, match="bridge_orig, fractal20220817_data"):
        select_unnorm_key(NORM, "")
    with pytest.raises(UnnormKeyError, match="'libero'.*available: bridge_orig, fractal20220817_data"):
        select_unnorm_key(NORM, "libero")
    assert select_unnorm_key({"only": {}}, None) == "only"
    with pytest.raises(UnnormKeyError, match="no action statistics"):
        select_unnorm_key({}, "")
    with pytest.raises(UnnormKeyError, match="q01"):
        action_stats({"x": {"action": {"q99": [1.0]}}})
    with pytest.raises(UnnormKeyError, match="NaN"):
        action_stats({"x": {"action": {"q01": [float("nan")], "q99": [1.0]}}})


def test_gripper_options():
    a = np.array([[0.0] * 6 + [0.996], [0.0] * 6 + [0.2]])
    assert GripperOptions().apply(a)[:, 6].tolist() == [0.996, 0.2]
    assert GripperOptions(binarize=True).apply(a)[:, 6].tolist() == [1.0, 0.0]
    assert GripperOptions(invert=True).apply(a)[:, 6].tolist() == pytest.approx([0.004, 0.8])
    assert GripperOptions(binarize=True, invert=True).apply(a)[:, 6].tolist() == [0.0, 1.0]
    assert a[0, 6] == 0.996  # input untouched
