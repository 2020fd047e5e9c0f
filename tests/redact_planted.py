"""A planted set of PII and secrets, shared by tests/test_redact_planted.py and bench/redact.py.

Each value is generated, not listed, so the set can be as large as a benchmark wants while the test
uses a slice of it; every generator is seeded, so both see the same values. A `Planted` names the
text that is written into a trajectory (`text`) and the part of it that must never reach a corpus
(`secret`: the password of a `postgres://user:pass@host` URL, not the scheme). Values are realistic
(valid IBAN check digits, Luhn-valid cards, SSNs in issued ranges, dialable phone numbers): a
detector that validates must still catch them, and one that flags any digit run fails elsewhere.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"


@dataclass(frozen=True)
class Planted:
    category: str
    text: str  # what is written into the trajectory
    secret: str  # what must not survive into a corpus (text, or the sensitive part of it)


def _s(rng: random.Random, n: int, chars: str = ALNUM) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def _d(rng: random.Random, n: int) -> str:
    return _s(rng, n, string.digits)


def email(rng: random.Random) -> tuple[str, str]:
    user = rng.choice(["jane.doe", "j.smith+ci", "ops_team", "jürgen.weiß", "maría", "li.wei", "o'brien"])
    domain = rng.choice(["example.com", "corp.co.uk", "müller.de", "bücher.example", "例え.jp", "почта.рф",
                         "xn--mller-kva.de", "mail.example.org", "bank-ümlaut.ch"])
    value = f"{user}{rng.randint(1, 999)}@{domain}"
    return value, value


_PHONES = ["+1 {a}-{b}-{c}", "+1 ({a}) {b}-{c}", "+44 20 7946 0{d3}", "+44 7700 900{d3}", "+49 30 {d8}",
           "+49 151 {d8}", "+33 1 {p} {q} {r} {s}", "+81 3-{d4}-{d4b}", "+61 2 {d4} {d4b}", "+4915{d9}"]
_NATIONAL = ["0044 20 7946 0{d3}", "0049 30 {d8}", "020 7946 0{d3}", "030 {d8}", "0151 {d8}",
             "01 {p} {q} {r} {s}", "(0)20 7946 0{d3}", "07700 900{d3}", "0033 6 {p} {q} {r} {s}"]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(a=rng.choice(["212", "415", "646", "312", "617", "202"]), b=f"{rng.randint(200, 999)}",
                           c=_d(rng, 4), d3=_d(rng, 3), d4=_d(rng, 4), d4b=_d(rng, 4), d8=rng.choice("2345678") + _d(rng, 7),
                           d9=_d(rng, 9)[:8], p=_d(rng, 2), q=_d(rng, 2), r=_d(rng, 2), s=_d(rng, 2))


def phone_international(rng: random.Random) -> tuple[str, str]:
    value = _fill(rng.choice(_PHONES), rng)
    return value, value


def phone_national(rng: random.Random) -> tuple[str, str]:
    value = _fill(rng.choice(_NATIONAL), rng)
    return value, value


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        n = int(ch) * (1 if i % 2 else 2)
        total += n - 9 if n > 9 else n
    return body + str((10 - total % 10) % 10)


def credit_card(rng: random.Random) -> tuple[str, str]:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                                 ("6011", 16), ("35", 16)])
    digits = _luhn_complete(prefix + _d(rng, length - len(prefix) - 1))
    sep = rng.choice(["", " ", "-"])
    value = sep.join(digits[i:i + 4] for i in range(0, len(digits), 4))
    return value, value


_IBAN = {"GB": lambda r: _s(r, 4, string.ascii_uppercase) + _d(r, 14), "DE": lambda r: _d(r, 18),
         "FR": lambda r: _d(r, 23), "NL": lambda r: _s(r, 4, string.ascii_uppercase) + _d(r, 10),
         "ES": lambda r: _d(r, 20), "IT": lambda r: "X" + _d(r, 22), "CH": lambda r: _d(r, 17)}


def iban(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(_IBAN))
    bban = _IBAN[country](rng)
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    compact = f"{country}{98 - number % 97:02d}{bban}"
    value = " ".join(compact[i:i + 4] for i in range(0, len(compact), 4)) if rng.random() < 0.5 else compact
    return value, value


def us_ssn(rng: random.Random) -> tuple[str, str]:
    area = rng.choice([n for n in range(1, 900) if n not in (666,)])
    ssn = f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    if rng.random() < 0.3:
        ssn = ssn.replace("-", " ")
    return ssn, ssn


def passport(rng: random.Random) -> tuple[str, str]:
    number = rng.choice([_d(rng, 9), rng.choice("ACEX") + _d(rng, 8), _s(rng, 2, string.ascii_uppercase) + _d(rng, 7)])
    label = rng.choice(["passport number", "Passport No.", "passport #", "passport", "Reisepass-Nr."])
    return f"{label} {number}", number


def ipv4(rng: random.Random) -> tuple[str, str]:
    value = f"{rng.choice([23, 45, 81, 151, 185, 203, 212])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return value, value


def ipv6(rng: random.Random) -> tuple[str, str]:
    h = lambda: f"{rng.randint(1, 0xffff):x}"  # noqa: E731
    value = rng.choice([f"fe80::{h()}", "fe80::1", f"2001:db8::{h()}", f"2a02:{h()}:{h()}::{h()}",
                        ":".join(h() for _ in range(8)), f"fd00::{h()}:{h()}"])
    return value, value


def aws_access_key(rng: random.Random) -> tuple[str, str]:
    value = rng.choice(["AKIA", "ASIA"]) + _s(rng, 16, string.ascii_uppercase + string.digits)
    return value, value


def aws_secret_key(rng: random.Random) -> tuple[str, str]:
    value = rng.choice(["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", _s(rng, 40, B64)])
    return value, value


def slack_webhook(rng: random.Random) -> tuple[str, str]:
    path = f"T{_s(rng, 8, string.ascii_uppercase + string.digits)}/B{_s(rng, 10, string.ascii_uppercase + string.digits)}"
    secret = _s(rng, 24)
    return f"https://hooks.slack.com/services/{path}/{secret}", secret


def slack_token(rng: random.Random) -> tuple[str, str]:
    value = f"xox{rng.choice('bpae')}-{_d(rng, 12)}-{_d(rng, 13)}-{_s(rng, 24)}"
    return value, value


def github_token(rng: random.Random) -> tuple[str, str]:
    value = rng.choice([f"ghp_{_s(rng, 36)}", f"gho_{_s(rng, 36)}", f"github_pat_11{_s(rng, 20)}_{_s(rng, 59)}"])
    return value, value


def llm_api_key(rng: random.Random) -> tuple[str, str]:
    value = rng.choice([f"sk-proj-{_s(rng, 48)}", f"sk-ant-api03-{_s(rng, 40)}", f"sk-{_s(rng, 48)}"])
    return value, value


def service_token(rng: random.Random) -> tuple[str, str]:
    value = rng.choice([f"sk_live_{_s(rng, 24)}", f"rk_live_{_s(rng, 24)}", f"AIza{_s(rng, 35, ALNUM + '_-')}",
                        f"SG.{_s(rng, 22)}.{_s(rng, 43)}", f"npm_{_s(rng, 36)}", f"glpat-{_s(rng, 20)}",
                        f"SK{_s(rng, 32, '0123456789abcdef')}", f"hf_{_s(rng, 34)}", f"pypi-AgEIcHlwaS5vcmc{_s(rng, 120)}"])
    return value, value


def jwt(rng: random.Random) -> tuple[str, str]:
    value = f"eyJhbGciOiJIUzI1NiJ9.eyJ{_s(rng, 40, ALNUM + '_-')}.{_s(rng, 43, ALNUM + '_-')}"
    return value, value


def private_key(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
    body = "\n".join(_s(rng, 64, B64) for _ in range(4))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----", body.split("\n")[1]


def url_password(rng: random.Random) -> tuple[str, str]:
    password = rng.choice([_s(rng, rng.randint(6, 14)), rng.choice(["hunter2", "s3cret", "Passw0rd", "letmein"])
                           + _d(rng, 3), _s(rng, 10) + "%21"])
    scheme = rng.choice(["postgres", "postgresql", "mysql", "mongodb+srv", "redis", "amqp", "https"])
    user = rng.choice(["admin", "app", "jane", ""]) if scheme == "redis" else rng.choice(["admin", "app", "jane"])
    return f"{scheme}://{user}:{password}@db{rng.randint(1, 9)}.internal:5432/prod", password


def password_assignment(rng: random.Random) -> tuple[str, str]:
    password = rng.choice(["hunter2", "Tr0ub4dor&3", "correct-horse-battery", "P@ssw0rd!"]) + _d(rng, 2)
    template = rng.choice(["password={p}", "PASSWORD: {p}", 'DB_PASSWORD="{p}"', "passwd {p}", "--password {p}",
                           "pwd: '{p}'", "api_key = {p}", "client_secret: {p}"])
    return template.format(p=password), password


def uk_nino(rng: random.Random) -> tuple[str, str]:
    value = f"{rng.choice('ABCEGHJKLMNPRSTWXYZ')}{rng.choice('ABCEGHJKLMNPRSTWXYZ')} {_d(rng, 2)} {_d(rng, 2)} {_d(rng, 2)} {rng.choice('ABCD')}"
    return value, value


GENERATORS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    f.__name__: f for f in (email, phone_international, phone_national, credit_card, iban, us_ssn, passport, ipv4,
                            ipv6, aws_access_key, aws_secret_key, slack_webhook, slack_token, github_token,
                            llm_api_key, service_token, jwt, private_key, url_password, password_assignment, uk_nino)}


def planted(per_category: int, seed: int = 0) -> list[Planted]:
    """`per_category` distinct values of every category, in a fixed order."""
    out: list[Planted] = []
    for name, make in GENERATORS.items():
        rng, seen = random.Random(f"{seed}|{name}"), set()
        while len(seen) < per_category:
            text, secret = make(rng)
            if secret not in seen:
                seen.add(secret)
                out.append(Planted(name, text, secret))
    return out


FIELDS = ("system", "user", "assistant", "reasoning", "tool_arguments", "tool_result", "tool_definition", "task_id",
          "model", "agent", "metadata", "trajectory_id", "tool_call_id", "step_meta")


def record(ws: Any, index: int, p: Planted, started_at: datetime) -> None:
    """Two attempts at one task with `p.text` in every field of FIELDS (ids only where short enough), one
    rewarded 1 and one 0: SFT and KTO rows from both, a DPO pair, an RL prompt with metadata["task"]."""
    v = p.text
    short = v if len(v) <= 120 else v[:0]
    tools = [{"type": "function", "function": {"name": "lookup", "description": f"Looks up {v}", "parameters": {
        "type": "object", "properties": {"q": {"type": "string", "description": f"e.g. {v}", "default": v}}}}}]
    for attempt, reward in ((0, 1.0), (1, 0.0)):
        # '|' around the value: `traj-1-0-123-45-6789` is one number, SSN or not; `traj/1/0/<key>` a path
        tid = f"traj|{index}|{attempt}|{short}"
        with ws.trajectory(f"agent {v}", trajectory_id=tid, task_id=f"task|{index}|{short}", model=f"model {v}",
                           tools=tools, started_at=started_at, metadata={"note": v, "task": {"question": v}}) as run:
            run.system(f"You help {v}.")
            run.user(f"Please handle {v} for me (case {index}).")
            call = run.tool_call("lookup", {"q": v, "nested": [{"value": v}]}, call_id=f"call|{index}|{short}",
                                 reasoning=f"I should look up {v}.", meta={"model": f"model {v}", "note": v})
            run.tool_result(call, f"found {v}" if attempt == 0 else {"result": v})
            run.assistant(f"Done with {v}, attempt {attempt}.", reasoning=f"The answer is {v}.")
        ws.record_outcome(tid, "reward", reward)


def corpus_text(df: Any, tokenizer: Any) -> str:
    """Everything a corpus version holds as text: its rows as JSON (escaped) and as plain values, and every
    token-id column decoded with the tokenizer it was built with."""
    import orjson

    text = df.drop([c for c in df.columns if c.endswith(("_ids", "_mask"))])
    blob = orjson.dumps(text.to_dicts(), default=str).decode()
    blob += "\n".join(str(v) for col in text.columns for v in text[col].to_list())
    for col in [c for c in df.columns if c.endswith("_ids")]:
        blob += "".join(tokenizer.decode(ids) for ids in df[col].to_list())
    return blob


def leaks(planted_values: list[Planted], blob: str) -> Iterator[Planted]:
    """The planted values whose secret (as written, or without its spaces and dashes) occurs in `blob`."""
    squeezed = blob.replace(" ", "").replace("-", "")
    for p in planted_values:
        if p.secret in blob or p.secret.replace(" ", "").replace("-", "") in squeezed:
            yield p
