"""PII and secret redaction, in one place, before anything is hashed, tokenized or snapshotted.

Every detector is a regex plus a validator (Luhn for cards, `ipaddress` for IPs, Shannon entropy for
opaque tokens): a corpus where prices, dates, timestamps and ids turned into `[REDACTED:phone]` is
as useless for training as one that leaks a key. Detectors run in priority order (a PEM block or a
JWT first, catch-all entropy last) and a span claimed by one is never re-matched by another, so each
secret is counted once, under its most specific kind.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.jsonio import dumps_json

__all__ = ["GROUPS", "KINDS", "Redactor"]

SECRETS = ("private_key", "jwt", "anthropic_key", "openai_key", "aws_key", "github_token", "slack_token",
           "high_entropy")
PII = ("email", "credit_card", "ipv6", "ipv4", "phone")
KINDS = (*SECRETS[:-1], *PII, "high_entropy")  # priority order: most specific first
GROUPS = {"secrets": SECRETS, "pii": PII, "ip": ("ipv4", "ipv6"), "all": KINDS}

_PATTERNS = {
    "private_key": r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    "jwt": r"(?<![\w-])eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}",
    "anthropic_key": r"(?<![\w-])sk-ant-[\w-]{20,}",
    "openai_key": r"(?<![\w-])sk-[\w-]{20,}",  # also sk-proj-..., sk-svcacct-...
    "aws_key": r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"
               r"|(?i:aws_?secret_?(?:access_?)?key)[\"' :=]{1,5}(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
    "github_token": r"(?<![\w-])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{22,})",
    "slack_token": r"(?<![\w-])xox[abposre]-[A-Za-z0-9-]{10,}",
    # not followed by ":path", which makes git@github.com:org/repo.git an SSH address
    "email": r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-]|:[\w/~])",
    # 13-19 digits, optionally grouped by spaces or dashes, not part of a longer number (0.2235294117647059)
    "credit_card": r"(?<![\d+.])(?<!\d[ -])\d(?:[ -]?\d){12,18}(?![ -]?\d|\.\d)",
    "ipv6": r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?(?![\w:.])",
    "ipv4": r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)",
    # international (+CC ...) or North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1-555-123-4567;
    # "100 200 3000" is just numbers, so bare groups need the same '-' or '.' between them
    "phone": r"(?<![\w+.-])(?:\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}|(?:1[ .-]?)?(?:\(\d{3}\) ?\d{3}[ .-]"
             r"|\d{3}([.-])\d{3}\1)\d{4})(?!\w|[.-]\d)",
}
_PAYLOADS = frozenset({"arguments", "input"})  # tool-call payloads: JSON text, or decoded objects
_STRUCTURAL = frozenset({"role", "id", "tool_call_id", "tool_use_id", "name", "type", "is_error", "meta"})
_CARD_SCHEMES = re.compile(r"4\d{12}(?:\d{3}){0,2}|5[1-5]\d{14}|2[2-7]\d{14}|3[47]\d{13}"
                           r"|6(?:011|5\d\d)\d{12,15}|35\d{14,17}|3[0689]\d{12}")
_HEX_ID = re.compile(r"[0-9a-fA-F]+(?:-[0-9a-fA-F]+)*")  # sha/md5 digests, UUIDs: ids, not secrets
_PATH_PART = re.compile(r"[A-Za-z][a-z]{2,}|[0-9a-f]{8,}|[a-z0-9]+(?:[-_][a-z0-9]+)+")
_WORD = re.compile(r"[A-Z]?[a-z]{2,}|[A-Z]{2,}(?![a-z])")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _card(text: str) -> bool:
    """Luhn alone passes one random number in ten (timestamps, order ids), so the issuer prefix and
    length must fit a real scheme too: Visa, Mastercard, Amex, Discover, JCB, Diners."""
    digits = re.sub(r"\D", "", text)
    return bool(_CARD_SCHEMES.fullmatch(digits)) and _luhn(digits)


def _ip(text: str) -> bool:
    """Loopback and 0.0.0.0 are not personal; `3.4.2.2` is a version or section number far more
    often than a host; `1::2` is a Python slice, so IPv6 needs three groups."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    groups = [g for g in re.split(r"[:.]", text) if g]
    if addr.version == 4 and all(len(g) == 1 for g in groups):
        return False
    return not (addr.is_loopback or addr.is_unspecified) and (addr.version == 4 or len(groups) >= 3)


def _phone(text: str) -> bool:
    """Phone numbers have 10-15 digits; `+12.345678` is a signed decimal, `+1980-02-29 01` a date."""
    digits = sum(ch.isdigit() for ch in text)
    return 10 <= digits <= 15 and not re.fullmatch(r"\+\d+\.\d+|\+\d{4}-\d\d-\d\d.*", text, re.S)


def shannon_entropy(text: str) -> float:
    """Bits per character of `text` by its own character frequencies."""
    return -sum(n / len(text) * math.log2(n / len(text)) for n in Counter(text).values()) if text else 0.0


class Redactor:
    """Replaces PII and secrets with `placeholder.format(kind=...)` and counts what it replaced.

    kinds: names from KINDS and/or GROUPS ("secrets", "pii", "ip", "all"); default all.
    entropy_threshold / min_token_length: a run of min_token_length..256 characters from
    [A-Za-z0-9+/_-] is a `high_entropy` secret when its Shannon entropy reaches the threshold and it
    is not made of words: paths, URLs and model ids (a wordy `/` part), slugs and snake_case (short
    parts between - and _), CamelCase (mostly capitalised words) are kept. It catches ~95% of random
    32-char base64/alphanumeric tokens and flags ~20 tokens in 8,000 source files of installed Python
    packages, mostly inline base64 data. Longer runs are data (images), not credentials.
    Hex digests and UUIDs are ids, kept unless `redact_hex_ids=True`.
    """

    def __init__(self, kinds: Iterable[str] | None = None, placeholder: str = "[REDACTED:{kind}]", *,
                 entropy_threshold: float = 4.0, min_token_length: int = 32,
                 redact_hex_ids: bool = False) -> None:
        wanted: set[str] = set()
        for name in ["all"] if kinds is None else ([kinds] if isinstance(kinds, str) else kinds):
            if name not in GROUPS and name not in KINDS:
                raise ValueError(f"unknown redaction kind {name!r}; known: {', '.join([*GROUPS, *KINDS])}")
            wanted.update(GROUPS.get(name, (name,)))
        self.kinds = tuple(kind for kind in KINDS if kind in wanted)
        self.placeholder = placeholder
        placeholder.format(kind="email")  # fail now, not on the first secret
        self.entropy_threshold, self.redact_hex_ids = entropy_threshold, redact_hex_ids
        body, longest = r"A-Za-z0-9+/_\-", max(256, min_token_length)
        token = rf"(?<![{body}])[{body}]{{{min_token_length},{longest}}}={{0,2}}(?![{body}=])"
        patterns = {**_PATTERNS, "high_entropy": token}
        checks: dict[str, Callable[[str], bool]] = {"credit_card": _card, "ipv4": _ip, "ipv6": _ip,
                                                     "phone": _phone, "high_entropy": self._opaque}
        self._detectors = [(kind, re.compile(patterns[kind]), checks.get(kind)) for kind in self.kinds]

    def _opaque(self, token: str) -> bool:
        token = token.rstrip("=")
        if _HEX_ID.fullmatch(token):  # hex has at most 4 bits/char, so it gets its own bar
            return self.redact_hex_ids and shannon_entropy(token.replace("-", "")) >= 3.0
        parts = token.split("/")
        if len(parts) > 1 and any(_PATH_PART.fullmatch(part) for part in parts):
            return False  # a path, URL or model id: org/Model-7B-Instruct, com/x/blob/<sha>/src
        if all(len(part) <= 12 for part in re.split(r"[-_/]+", token)):
            return False  # words joined by - and _: slugs, snake_case, model names
        words = sum(len(word) for word in _WORD.findall(token))  # CamelCase identifiers are mostly words
        return words < 0.75 * len(token) and shannon_entropy(token) >= self.entropy_threshold

    def redact_text(self, text: str) -> tuple[str, Counter[str]]:
        """`text` with every detected span replaced, and how many spans of each kind were replaced."""
        counts: Counter[str] = Counter()
        if not text:
            return text, counts
        taken = bytearray(len(text))  # 1 where a higher-priority detector already claimed the character
        spans: list[tuple[int, int, str]] = []
        for kind, pattern, check in self._detectors:
            for match in pattern.finditer(text):
                # group "v", where a pattern has one, is the secret itself without its label
                start, end = match.span("v") if match.groupdict().get("v") else match.span()
                if start == end or 1 in taken[start:end] or (check and not check(match.group())):
                    continue
                taken[start:end] = b"\x01" * (end - start)
                spans.append((start, end, kind))
        if not spans:
            return text, counts
        out, last = [], 0
        for start, end, kind in sorted(spans):
            out += [text[last:start], self.placeholder.format(kind=kind)]
            counts[kind] += 1
            last = end
        return "".join([*out, text[last:]]), counts

    def redact_messages(self, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Counter[str]]:
        """Redacted copies of chat messages (the input is not modified) and counts per kind.

        Content, reasoning, content blocks, tool results and tool-call arguments are redacted; ids,
        roles, tool names and step metadata are left alone. Arguments (and any string value that
        is a JSON document) are decoded, redacted value by value and re-encoded, so they stay valid
        JSON; a document without findings keeps its exact original text."""
        counts: Counter[str] = Counter()
        return [self._walk(message, counts) for message in messages], counts

    def _walk(self, value: Any, counts: Counter[str], key: str | None = None) -> Any:
        """Message structure: ids, roles and names are kept; text and tool payloads are redacted."""
        if isinstance(value, str) and (key in _PAYLOADS or value.lstrip()[:1] in ("{", "[")):
            return self._json(value, counts)
        if key in _PAYLOADS or not isinstance(value, dict | list):
            return self._data(value, counts)
        if isinstance(value, dict):
            return {k: v if k in _STRUCTURAL else self._walk(v, counts, k) for k, v in value.items()}
        return [self._walk(item, counts, key) for item in value]

    def _json(self, text: str, counts: Counter[str]) -> str:
        found: Counter[str] = Counter()
        try:
            redacted = self._data(json.loads(text), found)
        except (ValueError, RecursionError):  # not JSON after all, truncated, or absurdly deep: plain text
            return self._data(text, counts)
        counts.update(found)
        return dumps_json(redacted, ensure_ascii=False) if found else text

    def _data(self, value: Any, counts: Counter[str]) -> Any:
        """Decoded JSON (or a plain string): every string value is redacted, keys are kept."""
        if isinstance(value, str):
            text, found = self.redact_text(value)
            counts.update(found)
            return text
        if isinstance(value, dict):
            return {k: self._data(v, counts) for k, v in value.items()}
        if isinstance(value, list):
            return [self._data(item, counts) for item in value]
        return value
