"""Who may use the appliance once it leaves loopback: one login and one API key.

On loopback (the default) nothing asks for credentials: only the box's own users reach the
ports. To publish them elsewhere (``ONEBOX_BIND``), both must be set, or nothing starts:

- ``ONEBOX_USERNAME`` (default ``onebox``) and ``ONEBOX_PASSWORD``: the login of the MLflow UI
  and API (its basic-auth app, this user as its admin), the Prefect UI and API (its server auth
  string), the labeling page, and the gateway's pages (a browser's basic-auth prompt);
- ``ONEBOX_API_KEY``: what a program sends to ``/predict`` through the gateway, as
  ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.

The gateway's health route, its index page and each model's health routes stay open. Set, they
are asked for on loopback too. onebox's own commands and the worker pass them on (MLflow's and
Prefect's client variables, :func:`client_environment`).

Each service's entry script (compose/*/) checks the same rule as :func:`exposure_problem` in its
own words, so a `docker compose up` without onebox is refused too. Standard library only.
"""

from __future__ import annotations

import base64
import ipaddress
import re

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Characters that mean nothing to an env file, a shell, nginx's configuration or a URL's userinfo
# (no quotes, '$', '#', '\', spaces); `python3 -c "import secrets; print(secrets.token_urlsafe(24))"`
# makes such a secret.
SECRET = re.compile(r"^[A-Za-z0-9._~+/=@%!*,-]+$")
MIN_PASSWORD = 12
MIN_API_KEY = 24
GENERATE = 'python3 -c "import secrets; print(secrets.token_urlsafe(24))"'
# Defaults that tools ship or tutorials print, refused however long (MLflow's old admin
# password among them): a password anybody can look up is none.
KNOWN_DEFAULTS = frozenset(
    {
        "password1234",
        "password12345",
        "passwordpassword",
        "administrator",
        "changemechangeme",
        "changeme1234",
        "123456789012",
        "1234567890123",
        "qwertyuiopasdf",
        "onebox-password",
        "oneboxpassword",
        "mlflow-password",
        "prefect-password",
        "letmeinletmein",
    }
)


def is_loopback(address: str) -> bool:
    """Whether ``address`` (a bind address) is reachable from this machine only."""
    host = address.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_secret(name: str, value: str, *, minimum: int, username: str = "") -> str:
    """``value`` when it may be used as the secret ``name``; else ValueError naming what is wrong."""
    if len(value) < minimum:
        raise ValueError(f"{name} is too short: give at least {minimum} characters (for example: {GENERATE})")
    if not SECRET.fullmatch(value):
        raise ValueError(
            f"{name} holds a character onebox does not pass on safely: use letters, digits and ._~+/=@%!*,- "
            f"(for example: {GENERATE})"
        )
    lowered = value.lower()
    if lowered in KNOWN_DEFAULTS or len(set(value)) < 4 or (username and username.lower() in lowered):
        raise ValueError(f"{name} is a default or easily guessed value: choose another (for example: {GENERATE})")
    return value


def exposure_problem(bind: str, *, password: str | None, api_key: str | None) -> str | None:
    """Why the appliance may not publish its ports on ``bind``; None when it may."""
    if is_loopback(bind) or (password and api_key):
        return None
    return (
        f"ONEBOX_BIND={bind} publishes the appliance beyond this machine, but no credentials are set: "
        "set ONEBOX_PASSWORD (the login of MLflow, Prefect and the labeling page) and ONEBOX_API_KEY "
        "(for /predict), or bind to 127.0.0.1 (README: Exposing the ports)"
    )


def basic_authorization(username: str, password: str) -> str:
    """The ``Authorization`` header value of HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def api_key_headers(api_key: str | None) -> dict[str, str]:
    """The headers of a request to ``/predict`` through the gateway; none without a key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def client_environment(username: str, password: str | None) -> dict[str, str]:
    """MLflow's and Prefect's client variables for the login; empty without a password."""
    if not password:
        return {}
    return {
        "MLFLOW_TRACKING_USERNAME": username,
        "MLFLOW_TRACKING_PASSWORD": password,
        "PREFECT_API_AUTH_STRING": f"{username}:{password}",
    }
