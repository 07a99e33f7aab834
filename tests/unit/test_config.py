import subprocess
import sys

import pytest

from core.config import ConfigError, load_config
from w4tui.settings import load_settings, save_setting

BAD = [
    ("[train]\nlora_r = 0\n", "'train.lora_r' must be greater than 0"),
    ('[train]\nlora_r = "16"\n', "'train.lora_r' must be an integer"),
    ("[train]\nlora_r = true\n", "'train.lora_r' must be an integer"),
    ("[train]\nlearning_rate = -1e-4\n", "'train.learning_rate' must be greater than 0"),
    ("[train]\nlora_dropout = 1.5\n", "'train.lora_dropout' must be at least 0 and less than 1"),
    ('[train]\ndevice = "gpu"\n', '\'train.device\' must be one of "auto", "mps", "cuda", "cpu"'),
    ("[train]\nlora_rank = 16\n", "unknown key 'train.lora_rank' in [train]"),
    ("[trian]\nlora_r = 16\n", "unknown key 'trian' in the top level"),
    ('[train]\ntarget_modules = "q_proj"\n', "'train.target_modules' must be a list of strings"),
    ("[train]\ntarget_modules = []\n", "'train.target_modules' must list at least one module"),
    ('[quantize]\ntype = "Q4_K"\n', "'quantize.type' must be one of"),
    ('[ollama]\nhost = "http://local host:11434"\n', "'ollama.host' must be a host like"),
    ('[ollama]\nmodel = "web4-agent:latest"\n', "'ollama.model' must be an Ollama model name without a tag"),
    ('[ollama]\nmodel = "my.team/web4-agent"\n', "no '.' in the namespace)"),
    ('[ollama]\nmodel = "' + "w" * 81 + '"\n', "'ollama.model' must be an Ollama model name"),
    ('[ollama]\ntemplate_from = "-qwen:7b"\n', "'ollama.template_from' must be an Ollama model name"),
    ("[ollama.parameters]\ntop_p = 0\n", "'ollama.parameters.top_p' must be greater than 0 and at most 1"),
    ("[ollama.parameters]\nnum_ctx = 16384.5\n", "'ollama.parameters.num_ctx' must be an integer"),
    ('[schedule]\ntime = "9:30pm"\n', "'schedule.time' must be a 24-hour time"),
    ('[schedule]\ndays = "weekdays"\n', "'schedule.days' must be days like"),
    ('[nightly]\ndataset_glob = "incremental_*.json"\n', "'nightly.dataset_glob' must end in \".jsonl\""),
    ('model = "x"\n', "'model' must be a table"),
    ('[paths]\nruns = ""\n', "'paths.runs' must be a path string"),
    ("[train\nlora_r = 16\n", "not valid TOML"),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_config_names_file_key_and_problem(tmp_path, text, expected):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    assert expected in message
    assert "\n" not in message


def test_partial_config_keeps_defaults_and_resolves_paths_next_to_it(tmp_path):
    path = tmp_path / "sub" / "config.toml"
    path.parent.mkdir()
    path.write_text('[train]\nlora_r = 8\nlearning_rate = 1\n[paths]\nruns = "../r"\n')
    config = load_config(path)
    assert config.train.lora_r == 8 and config.train.lora_alpha == 32.0
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.paths.runs == (tmp_path / "r").resolve()
    assert config.paths.outputs == (path.parent / "outputs").resolve()
    assert config.ollama.parameters.num_ctx == 16384 and config.ollama.model == "web4-agent"


def test_embedded_default_has_the_documented_values():
    from core.config import default_config_path

    config = load_config(default_config_path())
    assert config.model.base == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert (config.train.lora_r, config.train.lora_alpha) == (16, 32.0)
    assert (config.nightly.epochs, config.nightly.learning_rate) == (1.0, 1e-4)
    assert config.quantize.type == "Q4_K_M"
    assert config.ollama.host == "http://127.0.0.1:11434"
    p = config.ollama.parameters
    assert (p.temperature, p.top_p, p.top_k, p.repeat_penalty, p.num_ctx) == (0.0, 0.95, 40, 1.1, 16384)


def test_every_default_key_is_commented():
    from core.config import default_config_path

    lines = default_config_path().read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            before = lines[i - 1].strip()
            assert before.startswith("#") or "=" in before or "#" in line, f"uncommented key: {line}"


def test_env_var_selects_config(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlora_r = 4\n")
    monkeypatch.setenv("W4TUI_CONFIG", str(path))
    assert load_config().train.lora_r == 4
    assert load_config(tmp_path / "c.toml").file == path


def test_cli_reports_bad_config_in_one_line_with_exit_2(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[train]\nepochs = "three"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "w4tui", "--config", str(path), "status"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}: 'train.epochs' must be a number (got 'three')"
    assert "Traceback" not in proc.stderr


def test_cli_reports_missing_config(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "w4tui", "--config", str(tmp_path / "nope.toml"), "runs"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "config file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_settings_are_written_apart_and_never_touch_config_comments(config_file):
    config_file.write_text("# my precious comment\n[train]\nlora_r = 8  # tuned by hand\n")
    before = config_file.read_text()
    config = load_config()
    save_setting(config, "theme", "w4-light")
    save_setting(config, "theme", "w4-dark")
    assert config_file.read_text() == before
    assert load_settings(config) == ({"theme": "w4-dark"}, None)


def test_broken_settings_file_is_reported_not_fatal(config_file):
    config = load_config()
    config.paths.state.mkdir(parents=True)
    (config.paths.state / "settings.toml").write_text("theme = [")
    settings, problem = load_settings(config)
    assert settings == {} and "settings.toml" in problem


def test_a_directory_given_as_the_config_names_the_file_inside(tmp_path):
    # `w4tui --config /tmp/qa1 status` (the demo's directory) said only "IsADirectoryError".
    (tmp_path / "config.toml").write_text("")
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path)
    assert str(refused.value) == (
        f"{tmp_path}: cannot read config file: it is a directory (did you mean --config {tmp_path / 'config.toml'}?)"
    )
