"""Settings: typed, frozen, every variable documented, bad values named at start."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from infra.settings import Settings, SettingsError, known_variables, load_settings


def test_defaults_need_no_configuration() -> None:
    s = load_settings({}, dotenv=None)
    assert s.database.url is None
    assert s.redis.url is None
    assert s.http.port == 8080
    assert s.data_dir == Path(".liteskill")


def test_values_are_parsed_by_type() -> None:
    s = load_settings(
        {
            "LITESKILL_PORT": "9001",
            "LITESKILL_WORKER_EMBEDDED": "false",
            "LITESKILL_CORS_ORIGINS": "https://a.example, https://b.example",
            "LITESKILL_DATABASE_URL": "postgresql://u@db/liteskill",
            "LITESKILL_DATA_DIR": "~/ls-data",
            "LITESKILL_ENV": "production",
        },
        dotenv=None,
    )
    assert s.http.port == 9001
    assert s.worker.embedded is False
    assert s.http.cors_origins == ("https://a.example", "https://b.example")
    assert s.database.url == "postgresql://u@db/liteskill"
    assert s.data_dir == Path("~/ls-data").expanduser()
    assert s.env == "production"


def test_settings_are_frozen() -> None:
    s = load_settings({}, dotenv=None)
    with pytest.raises(AttributeError):
        s.env = "test"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LITESKILL_PORT": "eighty"}, "LITESKILL_PORT"),
        ({"LITESKILL_PORT": "70000"}, "LITESKILL_PORT"),
        ({"LITESKILL_WORKER_EMBEDDED": "maybe"}, "LITESKILL_WORKER_EMBEDDED"),
        ({"LITESKILL_ENV": "staging"}, "LITESKILL_ENV"),
        ({"LITESKILL_DATABASE_URL": "mysql://x"}, "LITESKILL_DATABASE_URL"),
        ({"LITESKILL_REDIS_URL": "http://x"}, "LITESKILL_REDIS_URL"),
        ({"LITESKILL_PROT": "8080"}, "LITESKILL_PROT"),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env, dotenv=None)


def test_dotenv_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("LITESKILL_PORT=7000\nLITESKILL_LOG_LEVEL=debug\n")
    for name, _ in known_variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LITESKILL_PORT", "7001")
    s = load_settings(dotenv=dotenv)
    assert s.http.port == 7001
    assert s.log_level == "debug"


def test_every_variable_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name, _ in known_variables() if f"`{name}`" not in readme]
    assert not missing, f"README lacks: {missing}"


def test_every_field_has_a_docstring_naming_its_variable() -> None:
    import inspect

    from infra import settings as mod

    source = inspect.getsource(mod)
    for name, _ in known_variables():
        assert f'"""{name}:' in source, f"{name} has no doc line"


def test_struct_is_msgspec() -> None:
    assert issubclass(Settings, msgspec.Struct)


def test_model_call_timeouts_are_validated() -> None:
    from infra.settings import SettingsError, load_settings

    loaded = load_settings({"LITESKILL_LLM_TIMEOUT_S": "120", "LITESKILL_LLM_IDLE_TIMEOUT_S": "15"}, dotenv=None)
    assert (loaded.llm.llm_timeout_s, loaded.llm.llm_idle_timeout_s, loaded.llm.llm_max_retries) == (120.0, 15.0, 2)
    for env, name in [
        ({"LITESKILL_LLM_IDLE_TIMEOUT_S": "900"}, "LITESKILL_LLM_IDLE_TIMEOUT_S"),
        ({"LITESKILL_LLM_TIMEOUT_S": "0"}, "LITESKILL_LLM_TIMEOUT_S"),
        ({"LITESKILL_LLM_MAX_RETRIES": "-1"}, "LITESKILL_LLM_MAX_RETRIES"),
    ]:
        with pytest.raises(SettingsError, match=name):
            load_settings(env, dotenv=None)


def test_numbers_with_a_fraction_are_parsed() -> None:
    from infra.settings import SettingsError, load_settings

    assert load_settings({"LITESKILL_AUTH_CACHE_TTL_S": "2.5"}, dotenv=None).auth_cache_ttl_s == 2.5
    with pytest.raises(SettingsError, match="LITESKILL_AUTH_CACHE_TTL_S"):
        load_settings({"LITESKILL_AUTH_CACHE_TTL_S": "soon"}, dotenv=None)
