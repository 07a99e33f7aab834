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


def test_a_build_says_which_trainer_and_base_precision_made_it():
    from core.train_backend import trained_by

    assert trained_by({"backend": "mlx", "base_precision": "4-bit", "base_dtype": "4-bit"}) == "mlx, 4-bit base"
    assert trained_by({"args": {"backend": "torch"}, "base_dtype": "bfloat16"}) == "torch, bfloat16 base"
    assert trained_by({"base_dtype": "float32"}) == "torch, float32 base"  # a record from before the mlx backend


def test_the_start_form_shows_the_trainer_this_machine_will_use(config_file, monkeypatch):
    from core import train_backend
    from core.config import load_config
    from w4tui.ui.screens.launch import backend_settings

    config = load_config(config_file)
    monkeypatch.setattr(train_backend, "apple_silicon", lambda: False)
    assert backend_settings(config) == ["--backend", "torch"]  # no --quantize_base: torch would refuse it
    monkeypatch.setattr(train_backend, "apple_silicon", lambda: True)
    monkeypatch.setattr(train_backend, "mlx_installed", lambda: True)
    assert backend_settings(config) == ["--backend", "mlx", "--quantize_base", "4"]
