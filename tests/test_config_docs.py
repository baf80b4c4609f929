"""The configuration is documented: every setting in config/README.md, examples that parse and are
exactly what `mla-node node init` writes, and bad files that name the bad key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from mla_node.cli import cli
from mla_node.config import (
    ClerkApiSection,
    DeliverySection,
    NodeConfig,
    NodeSection,
    documented_settings,
    load_config,
    parse_config,
)
from mla_node.config_text import (
    EXAMPLE_STATES,
    commented_config,
    example_config,
    example_endpoint,
    example_path,
    readme_with_table,
)
from mla_node.errors import ConfigError
from mla_node.localnet import CENTRAL_AUTHORITIES

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
README = CONFIG_DIR / "README.md"
REGENERATE = "run `python scripts/write_config_examples.py`"


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    missing = [name for name in documented_settings() if f"`{name}`" not in readme]
    assert not missing, f"settings missing from config/README.md: {missing}; {REGENERATE}"


def test_every_setting_has_a_description() -> None:
    assert all(documented_settings().values())


def test_the_readme_table_is_current() -> None:
    readme = README.read_text(encoding="utf-8")
    assert readme_with_table(readme) == readme, REGENERATE


@pytest.mark.parametrize("state", EXAMPLE_STATES)
def test_example_config_parses(state: str) -> None:
    config = load_config(example_path(CONFIG_DIR, state))
    assert config.node.state == state
    assert config.node.authority_name == CENTRAL_AUTHORITIES[state]


@pytest.mark.parametrize("state", EXAMPLE_STATES)
def test_example_config_is_what_node_init_writes(state: str, tmp_path: Path) -> None:
    example = example_path(CONFIG_DIR, state).read_text(encoding="utf-8")
    assert example == example_config(state, CENTRAL_AUTHORITIES[state]), REGENERATE
    result = CliRunner().invoke(
        cli,
        ["node", "init", "--state", state, "--dir", str(tmp_path),
         "--endpoint", example_endpoint(state)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "config.toml").read_text(encoding="utf-8") == example


@pytest.mark.parametrize("state", EXAMPLE_STATES)
def test_example_config_lists_every_setting_with_its_description(state: str) -> None:
    text = example_path(CONFIG_DIR, state).read_text(encoding="utf-8")
    data = tomllib.loads(text)
    for name, description in documented_settings().items():
        section, key = name.split(".")
        assert key in data[section], name
        assert description.split()[0] in text


def test_commented_config_round_trips_awkward_values(tmp_path: Path) -> None:
    config = NodeConfig(
        node=NodeSection(
            state="BR",
            authority_name='Ministério "da Justiça"\\ \n\t segunda linha',
            database="dados/nó.db",
        ),
        clerk_api=ClerkApiSection(host="::1", port=0),
        delivery=DeliverySection(initial_backoff_s=0.2, max_backoff_s=1e3, max_in_flight=1),
        base_dir=tmp_path,
    )
    text = commented_config(config, title="a title\nover two lines")
    assert parse_config(tomllib.loads(text), tmp_path) == config


BAD_CONFIGS = [
    ("delivery", "max_backoff_s = -1", "delivery.max_backoff_s"),
    ("delivery", "max_backof_s = 3", "delivery.max_backof_s"),
    ("clerk_api", "port = 70000", "clerk_api.port"),
    ("clerk_api", 'port = "eighty"', "clerk_api.port"),
    ("peers", 'host = "0.0.0.0"', "peers"),
    ("delivery", "deadline_s = 604800", "delivery.deadline_s"),  # not shorter than max_age_s
    ("delivery", "deadline_warning_fraction = 1.0", "delivery.deadline_warning_fraction"),
]


def config_with(section: str, line: str) -> str:
    """The AR example with ``line`` added to ``section`` (a later duplicate key wins nothing:
    TOML refuses duplicates, so the first occurrence of the key is replaced)."""
    text = example_config("AR", CENTRAL_AUTHORITIES["AR"])
    key = line.split(" = ")[0] + " = "
    header = f"[{section}]\n"
    if header not in text:
        return f"{text}\n{header}{line}\n"
    head, _, body = text.partition(header)
    lines = [ln for ln in body.split("\n") if not ln.startswith(key)]
    return f"{head}{header}{line}\n" + "\n".join(lines)


@pytest.mark.parametrize(("section", "line", "key"), BAD_CONFIGS, ids=[b[1] for b in BAD_CONFIGS])
def test_a_bad_config_names_the_bad_key(tmp_path: Path, section: str, line: str, key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_with(section, line), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == key
    assert info.value.detail.startswith(f"{key}: ")

    result = CliRunner().invoke(cli, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error [config_invalid]: {key}: ")
    assert "Traceback" not in result.stderr


def test_a_missing_required_setting_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[node]\nauthority_name = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "node.state"


def test_a_config_that_is_not_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[node\n")
    result = CliRunner().invoke(cli, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error [config_invalid]: ")
    assert str(path) in result.stderr
