"""Which backend a run gets (core/train_backend.py), without either installed machinery loading."""

import pytest

from core.errors import StageError
from core.train_backend import choose


@pytest.mark.parametrize(
    "requested, apple, has_mlx, expected",
    [
        ("auto", True, True, "mlx"),  # the Mac default
        ("auto", True, False, "torch"),  # mlx not installed: torch on MPS, as before
        ("auto", False, True, "torch"),  # Linux with mlx[cpu]: torch stays the default
        ("torch", True, True, "torch"),
        ("mlx", False, True, "mlx"),  # asked for: the CPU build runs it (the tests do)
    ],
)
def test_auto_is_mlx_only_on_apple_silicon_with_mlx_installed(requested, apple, has_mlx, expected):
    assert choose(requested, apple, has_mlx) == expected


def test_mlx_asked_for_but_missing_says_how_to_install_it():
    with pytest.raises(StageError) as caught:
        choose("mlx", True, False)
    assert "not installed" in str(caught.value) and "pip install 'w4tui[mlx]'" in caught.value.hint
