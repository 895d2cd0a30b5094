"""The stop rule: object score, vanishing masks and area jumps, with patience."""

import numpy as np
import pytest

from napari_medprompt.segment.base import PropagationSettings
from napari_medprompt.segment.stop_rule import StopRule


def square(n: int, size: int = 64) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[:n, :n] = True
    return m


def test_good_slices_never_stop():
    rule = StopRule(PropagationSettings(patience=1))
    rule.reset(square(10))
    for n in (10, 11, 12, 11, 10, 9):
        assert rule.update(square(n), object_score=0.9) is False
        assert rule.last_ok and rule.reason == ""


def test_low_object_score_stops_after_patience():
    rule = StopRule(PropagationSettings(patience=3, min_object_score=0.5))
    rule.reset(square(10))
    assert rule.update(square(10), 0.4) is False
    assert not rule.last_ok and "object score" in rule.reason
    assert rule.update(square(10), 0.1) is False
    assert rule.update(square(10), 0.2) is True
    assert rule.streak == 3


def test_good_slice_resets_the_streak():
    rule = StopRule(PropagationSettings(patience=2))
    rule.reset(square(10))
    assert rule.update(square(10), 0.1) is False
    assert rule.update(square(10), 0.9) is False  # recovered
    assert rule.streak == 0
    assert rule.update(square(10), 0.1) is False
    assert rule.update(square(10), 0.1) is True


def test_vanishing_mask_counts_without_object_score():
    rule = StopRule(PropagationSettings(patience=1, min_area_px=10))
    rule.reset(square(10))
    assert rule.update(np.zeros((64, 64), bool)) is True
    assert "vanished" in rule.reason
    rule.reset(square(10))
    assert rule.update(square(3)) is True  # 9 px < 10 px


def test_area_jump_is_relative_to_last_good_slice():
    rule = StopRule(PropagationSettings(patience=1, max_area_ratio=2.5))
    rule.reset(square(10))  # 100 px
    assert rule.update(square(15)) is False  # 225 px: x2.25
    assert rule.update(square(23)) is False  # 529 vs 225: x2.35, reference moved
    rule.reset(square(10))
    assert rule.update(square(16)) is True  # 256 px: x2.56 > 2.5
    assert "jumped" in rule.reason
    rule.reset(square(20))  # 400 px
    assert rule.update(square(12)) is True  # shrink x2.78


def test_score_none_is_not_judged():
    rule = StopRule(PropagationSettings(patience=1))
    rule.reset(square(10))
    assert rule.update(square(10), None) is False


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="patience"):
        StopRule(PropagationSettings(patience=0))
    with pytest.raises(ValueError, match="max_area_ratio"):
        StopRule(PropagationSettings(max_area_ratio=1.0))


def test_regrowth_after_shrinking_is_bad_only_when_asked():
    areas = [100, 80, 45, 30, 40, 50, 60]  # shrinks below half of 100, then grows x2 over 30
    plain = StopRule(PropagationSettings(patience=2, max_area_ratio=2.5))
    plain.reset(square(10))
    assert not any(plain.update(square(int(round(np.sqrt(a))))) for a in areas)
    rule = StopRule(PropagationSettings(patience=2, max_area_ratio=2.5), regrow_ratio=1.5)
    rule.reset(square(10))
    lost_at = [i for i, a in enumerate(areas) if rule.update(square(int(round(np.sqrt(a)))))]
    # 36 px (6x6) after 25 (5x5) is x1.44: fine; 49 (7x7) is x1.96: bad; 64: bad -> lost there
    assert lost_at and lost_at[0] == 6 and "grew again" in rule.reason
    with pytest.raises(ValueError, match="regrow_ratio"):
        StopRule(regrow_ratio=1.0)


def test_an_object_that_only_grows_is_not_cut_by_the_regrowth_check():
    rule = StopRule(PropagationSettings(patience=1), regrow_ratio=1.5)
    rule.reset(square(5))
    assert not any(rule.update(square(n)) for n in (6, 7, 8, 10, 12, 14))


def test_empty_mask_counts_as_vanished_even_with_min_area_zero():
    import numpy as np

    from napari_medprompt.segment.base import PropagationSettings
    from napari_medprompt.segment.stop_rule import StopRule

    rule = StopRule(PropagationSettings(min_area_px=0, patience=1))
    rule.reset(np.zeros((8, 8), dtype=bool))
    assert "vanished" in rule.judge(np.zeros((8, 8), dtype=bool))
    full = np.ones((8, 8), dtype=bool)
    assert rule.judge(full) == ""  # zero reference area: no ratio to compare, no crash


def test_an_object_that_thins_out_into_a_tube_is_lost():
    # an organ whose section shrinks gradually (never a jump) and goes on as a thin vessel
    rule = StopRule(PropagationSettings(patience=2))
    rule.reset(square(40))
    for n in (36, 30, 24, 18, 13, 10):
        assert rule.update(square(n)) is False and rule.last_ok, n
    assert rule.update(square(7)) is False  # 3% of the seed's area, 18% of its thickness
    assert not rule.last_ok and "thinned out" in rule.reason and "3% of its largest area" in rule.reason
    assert rule.update(square(7)) is True  # the vessel goes on: lost here


def test_a_thin_object_that_stays_as_thin_is_not_a_tail():
    strip = lambda length: np.pad(np.ones((4, length), bool), ((10, 10), (2, 2)))  # noqa: E731
    rule = StopRule(PropagationSettings(patience=1, max_area_ratio=2.5))
    rule.reset(strip(200))
    for n in (150, 100, 60, 30, 14, 8):  # down to 4% of the area, but as thick as ever
        assert rule.update(strip(n)) is False and rule.last_ok, n


def test_the_tail_check_can_be_turned_off():
    rule = StopRule(PropagationSettings(patience=1, min_thickness_fraction=0.0))
    rule.reset(square(40))
    for n in (36, 30, 24, 18, 13, 10, 7, 7, 7):
        assert rule.update(square(n)) is False, n
