"""One natural order for tensor names: numbers as numbers, "/" first; the quick path sorts exactly as the key."""

from __future__ import annotations

import re
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from ckptcheck.order import natural_key, natural_sorted, sort_tensors
from ckptcheck.records import TensorInfo


def parts_key(name: str) -> tuple[tuple[tuple[int, int, str], ...], ...]:
    """Natural order spelled out the long way: path parts, each a run of text and numbers, a number before text."""
    return tuple(tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", part) if t)
                 for part in name.split("/"))


def test_numbers_as_numbers_and_groups_together() -> None:
    names = ["dense_10/kernel", "dense_2/kernel", "dense_1/bias", "dense/kernel", "dense_1/kernel", "vars/10",
             "vars/9", "a-b", "a/b", "a.b", "dense_1/kernel/Adam_1", "dense_1/kernel/Adam"]
    assert natural_sorted(names, str) == ["a/b", "a-b", "a.b", "dense/kernel", "dense_1/bias", "dense_1/kernel",
                                          "dense_1/kernel/Adam", "dense_1/kernel/Adam_1", "dense_2/kernel",
                                          "dense_10/kernel", "vars/9", "vars/10"]


_NAME = st.text(alphabet="ab_/.-9 0127é日\x7f~" + string.ascii_uppercase[:2], max_size=10)


@settings(max_examples=300, deadline=None)
@given(st.lists(_NAME, max_size=30))
def test_key_is_the_parts_order(names: list[str]) -> None:
    """The flat key orders every pair as the path-parts definition does."""
    assert natural_sorted(names, str) == sorted(names, key=parts_key) == sorted(names, key=natural_key)


@settings(max_examples=300, deadline=None)
@given(template=st.lists(st.sampled_from(["layer_", "/", ".ATTRIBUTES", "-", "x", " ", "a.b", "vars/", "é", "~"]),
                         min_size=1, max_size=4),
       numbers=st.lists(st.integers(min_value=0, max_value=999), min_size=1, max_size=40),
       width=st.integers(min_value=1, max_value=4))
def test_quick_path_for_numbers_of_one_width(template: list[str], numbers: list[int], width: int) -> None:
    """Zero-padded listings (layer_00000 ... layer_19999) take the quick path; it sorts as the key does."""
    names = []
    for i, n in enumerate(numbers):
        digits = str(n % 10**width).zfill(width)
        names.append(digits.join(template[: 1 + i % len(template)]) + ("/" + digits if i % 3 else ""))
    assert natural_sorted(names, str) == sorted(names, key=parts_key)


@settings(max_examples=300, deadline=None)
@given(template=st.lists(st.sampled_from(["dense_", "/", "vars/", "-", "x", "a.b", "é", "~"]), min_size=1, max_size=4),
       numbers=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=40),
       zeros=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=40))
def test_quick_path_for_numbers_of_several_widths(template: list[str], numbers: list[int], zeros: list[int]) -> None:
    """Numbers of several widths, some with leading zeros (a Keras file's dense_9 ... dense_49999/vars/0): padded to
    the widest, they sort as the key does; equal numbers (01, 1) keep their order, as the key's stable sort does."""
    names = []
    for i, n in enumerate(numbers):
        digits = "0" * zeros[i % len(zeros)] + str(n)
        names.append(digits.join(template[: 1 + i % len(template)]) + ("/" + str(n % 7) if i % 3 else ""))
    assert natural_sorted(names, str) == sorted(names, key=natural_key) == sorted(names, key=parts_key)


def test_long_digit_runs_sort_by_the_key() -> None:
    names = ["h" + "9" * 40, "h" + "1" * 41, "h2", "h10", "h" + "0" * 50 + "3"]
    assert natural_sorted(names, str) == sorted(names, key=natural_key) == ["h2", "h" + "0" * 50 + "3", "h10",
                                                                            "h" + "9" * 40, "h" + "1" * 41]


def test_sort_tensors_by_size_largest_first_then_name() -> None:
    tensors = [TensorInfo("b10", "float32", (4,), 16), TensorInfo("b2", "float32", (4,), 16),
               TensorInfo("a", "float32", (1,), 4), TensorInfo("z", "float32", (8,), 32)]
    assert [t.name for t in sort_tensors(tensors, "size")] == ["z", "b2", "b10", "a"]
    assert [t.name for t in sort_tensors(tensors, "name")] == ["a", "b2", "b10", "z"]


def test_several_widths_across_the_padding_pieces() -> None:
    """Past 8,192 names the numbers are padded a piece at a time (bounded memory); the order is still the key's
    across the pieces' seams, shuffled so that each piece holds every width."""
    import random

    from ckptcheck import order

    names = [f"layer_{i // 10}/kernel_{i % 10}" for i in range(3 * order._PAD_NAMES + 17)]
    random.Random(0).shuffle(names)
    assert natural_sorted(names, str) == sorted(names, key=natural_key)
    assert natural_sorted(names, str)[:12] == [f"layer_0/kernel_{i}" for i in range(10)] + ["layer_1/kernel_0",
                                                                                          "layer_1/kernel_1"]
