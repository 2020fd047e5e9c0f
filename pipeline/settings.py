"""Where tracemill runs and keeps its data: resolved in one place, with one precedence.

    CLI flag  >  environment variable  >  active profile in tracemill.yaml  >  built-in default

Why one place: the CLI, the capture server, the SDK and the Dagster resources must agree on the home,
the data root, the corpus root and the MLflow tracking URI, or a corpus snapshotted from the terminal
is invisible to the asset that trains on it. Each of them asks `current_settings()` (passing its own
flags, e.g. `--home`, `--root`) instead of reading `os.environ` and the YAML file itself.

The environment variables (and the fields they set):

    TRACEMILL_HOME         home        local folder for models, checkpoints, tokens, sqlite DBs (./.tracemill)
    TRACEMILL_CONFIG       config      the tracemill.yaml to read (./tracemill.yaml when it exists)
    TRACEMILL_PROFILE      profile     which `profiles:` entry of tracemill.yaml is active (local)
    TRACEMILL_ENV          legacy_env  deprecated: `production` is an alias of TRACEMILL_PROFILE=team
    TRACEMILL_DATA_ROOT    data_root   workspaces (landing, lake, curated): <home>/workspaces or s3://…
    TRACEMILL_CORPUS_ROOT  corpus_root Deeplake corpora: file://<home>/corpora or s3://…, al://…
    MLFLOW_TRACKING_URI    mlflow_tracking_uri   sqlite:///<home>/mlflow/mlflow.db or a server URL
    TRACEMILL_EXECUTOR, TRACEMILL_MAX_CONCURRENT  the Dagster step executor of the profile
    TRACEMILL_LOG_FORMAT, TRACEMILL_LOG_LEVEL     text|json, and the level of tracemill's logs

`Environment` holds the flag and environment layers only (it never reads the YAML file, so logging
and `home_dir()` keep working while a profile is misconfigured); `Settings` adds the profile layer.
An empty value at any layer means "not set here": the next layer decides. Credentials never go
through here: S3 clients read AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL themselves.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.schema import format_validation_error

DEFAULT_HOME = ".tracemill"
CONFIG_FILE = "tracemill.yaml"
LEGACY_PRODUCTION_PROFILE = "team"  # TRACEMILL_ENV=production, the older switch, means this profile
Executor = Literal["default", "in_process", "multiprocess", "k8s"]


class Profile(BaseModel):
    """Where things run and live. The code is the same in every profile; credentials never go here
    (S3 clients read the standard AWS_* variables)."""

    model_config = ConfigDict(extra="forbid")

    data_root: str = Field("", description="Workspaces (landing, lake, curated tables): empty = "
                           "<TRACEMILL_HOME>/workspaces, or an object-store URL such as s3://bucket/tracemill.")
    corpus_root: str = Field("", description="Deeplake corpora: empty = file://<TRACEMILL_HOME>/corpora, "
                             "or s3://bucket/corpora, gcs://…, al://org.")
    mlflow_tracking_uri: str = Field("", description="Empty = sqlite under TRACEMILL_HOME; a server URL for a team.")
    executor: Executor = Field(
        "default", description="Dagster step executor: default (Dagster's: a subprocess per step), in_process, "
        "multiprocess (max_concurrent), k8s = dagster_k8s.k8s_job_executor (a pod per step, so training steps "
        "get their GPU requests; needs `pip install dagster-k8s`).")
    max_concurrent: int = Field(4, ge=1, description="multiprocess/k8s: steps of one run running at once.")

    @field_validator("data_root", "corpus_root")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and "://" not in v and not v.startswith("/"):
            raise ValueError(f"{v!r} is neither an absolute folder nor a URL: use /abs/path or s3://bucket/prefix")
        return v


def default_corpus_root(home: str | os.PathLike) -> str:
    """The built-in corpus root: a file:// URL under the home."""
    return f"file://{Path(home).resolve() / 'corpora'}"


def default_tracking_uri(home: str | os.PathLike) -> str:
    """The built-in MLflow store: a sqlite DB under the home (artifacts beside it)."""
    return f"sqlite:///{Path(home).resolve() / 'mlflow' / 'mlflow.db'}"


def as_root_url(root: str) -> str:
    """A corpus root as a URL: object-store URLs as given (no trailing /), folders as file://<abs>."""
    return root.rstrip("/") if "://" in root else f"file://{Path(root).resolve()}"


class Environment(BaseSettings):
    """The flag and environment layers: what the process was told, before any profile is applied.
    Construct with flags as keyword arguments (None or empty = not given)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True, populate_by_name=True,
                                      case_sensitive=True)

    home: Path = Field(Path(DEFAULT_HOME), validation_alias="TRACEMILL_HOME")
    config: Path | None = Field(None, validation_alias="TRACEMILL_CONFIG")
    profile: str = Field("", validation_alias="TRACEMILL_PROFILE")
    legacy_env: str = Field("", validation_alias="TRACEMILL_ENV")
    data_root: str = Field("", validation_alias="TRACEMILL_DATA_ROOT")
    corpus_root: str = Field("", validation_alias="TRACEMILL_CORPUS_ROOT")
    mlflow_tracking_uri: str = Field("", validation_alias="MLFLOW_TRACKING_URI")
    executor: Executor = Field("default", validation_alias="TRACEMILL_EXECUTOR")
    max_concurrent: int = Field(4, ge=1, validation_alias="TRACEMILL_MAX_CONCURRENT")
    log_format: str = Field("text", validation_alias="TRACEMILL_LOG_FORMAT")
    log_level: str = Field("INFO", validation_alias="TRACEMILL_LOG_LEVEL")

    @field_validator("home")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.resolve()  # relative to the folder the process started in, fixed from here on

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings  # no .env files, no secrets dir: one documented set of inputs

    def config_path(self) -> Path | None:
        """The config file: TRACEMILL_CONFIG, else ./tracemill.yaml when it exists, else none (built-in)."""
        return _config_path(self.config)


class _ProfileSource(PydanticBaseSettingsSource):
    """The active profile's fields: below flags and environment variables, above built-in defaults.
    It runs after those layers, so it reads the profile name (and config path) they settled on."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole layer at once

    def __call__(self) -> dict[str, Any]:
        state = self.current_state  # the higher layers, keyed by environment variable name
        table = state.get("profiles")
        if table is None:
            table = read_profiles(Environment(**{k: v for k, v in state.items() if k != "profiles"}).config_path())
        name = state.get("TRACEMILL_PROFILE") or ""
        legacy = state.get("TRACEMILL_ENV") == "production"
        chosen = name or (LEGACY_PRODUCTION_PROFILE if legacy else "local")
        if chosen not in table:
            if chosen != "local":
                how = f"TRACEMILL_PROFILE={chosen!r}" if name else f"TRACEMILL_ENV=production (profile {chosen!r})"
                raise ValueError(f"{how}: no such profile; tracemill.yaml defines {sorted(table)} "
                                 "(add it under `profiles:` or unset TRACEMILL_PROFILE)")
            return {"profile": chosen}
        fields = table[chosen].model_dump(exclude_defaults=True)
        return {"profile": chosen, **{k: v for k, v in fields.items() if v not in ("", None)}}


class Settings(Environment):
    """Flags > environment variables > the active profile of tracemill.yaml > built-in defaults.

    Pass flags as keyword arguments (e.g. `home=`, `corpus_root=`, `profile=`); `profiles=` gives the
    profile table of an already-loaded config instead of reading tracemill.yaml. Use the resolved
    accessors (`corpus_root_url`, `tracking_uri`), which apply the built-in defaults under the home."""

    profile: str = Field("local", validation_alias="TRACEMILL_PROFILE")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ProfileSource(settings_cls)  # the precedence, highest first

    @property
    def corpus_root_url(self) -> str:
        return as_root_url(self.corpus_root) if self.corpus_root else default_corpus_root(self.home)

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or default_tracking_uri(self.home)

    def as_profile(self) -> Profile:
        """The resolved profile fields (environment overrides applied; empty = built-in default)."""
        return Profile(data_root=self.data_root, corpus_root=self.corpus_root, executor=self.executor,
                       mlflow_tracking_uri=self.mlflow_tracking_uri, max_concurrent=self.max_concurrent)


_ENV_NAMES = tuple(f.validation_alias for f in Settings.model_fields.values())


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML file; errors name the file."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None


def read_profiles(path: Path | None) -> dict[str, Profile]:
    """The `profiles:` table of a config file (only `local`, empty, without one)."""
    if path is None:
        return {"local": Profile()}
    return _profiles_cached(str(path), path.stat().st_mtime_ns if path.exists() else 0)


@functools.lru_cache(maxsize=8)
def _profiles_cached(path: str, stamp: int) -> dict[str, Profile]:
    """Parsed once per version of the file (the capture server resolves settings per request)."""
    raw = read_yaml(path).get("profiles")
    if raw is None:
        return {"local": Profile()}
    try:
        return TypeAdapter(dict[str, Profile]).validate_python(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid config: profiles.{format_validation_error(exc)}") from None


def environment(**flags: Any) -> Environment:
    """The flag and environment layers only (never reads tracemill.yaml, never fails on a profile)."""
    return Environment(**_given(flags))


def current_settings(profiles: Mapping[str, Profile] | None = None, **flags: Any) -> Settings:
    """The resolved settings for these flags (None or empty = not given). Cached per flags, environment,
    working folder and config file version, so it is cheap on hot paths such as Workspace()."""
    given = _given(flags)
    if profiles is not None:
        return Settings(**given, profiles=dict(profiles))
    env = tuple(os.environ.get(n) for n in _ENV_NAMES)
    path = _config_path(given.get("config") or os.environ.get("TRACEMILL_CONFIG"))
    stamp = path.stat().st_mtime_ns if path is not None and path.exists() else 0
    return _settings_cached(tuple(sorted((k, str(v)) for k, v in given.items())), env, os.getcwd(), stamp)


@functools.lru_cache(maxsize=64)
def _settings_cached(flags: tuple[tuple[str, str], ...], env: tuple[str | None, ...], cwd: str,
                     stamp: int) -> Settings:
    """The cache key is the arguments: a changed variable, folder or file resolves afresh."""
    return Settings(**dict(flags))


def _config_path(given: str | os.PathLike | None) -> Path | None:
    if given:
        return Path(given)
    here = Path(CONFIG_FILE)
    return here if here.exists() else None


def _given(flags: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v not in (None, "")}
