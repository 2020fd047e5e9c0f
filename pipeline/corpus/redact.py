"""PII and secret redaction, in one place, before anything is hashed, tokenized or snapshotted.

Every detector is a regex plus a validator (check digits for cards, IBANs and SSNs, `ipaddress` for IPs,
`phonenumbers` for national numbers, Shannon entropy for opaque tokens) or a detect-secrets pattern
(see `pipeline.corpus.redact_rules`): a corpus where prices, dates, timestamps and ids turned into
`[REDACTED:phone]` is as useless for training as one that leaks a key. Detectors run in priority
order (a PEM block or a JWT first, catch-all entropy last) and a span claimed by one is never
re-matched by another, so each secret is counted once, under its most specific kind.

Everything that reaches a corpus goes through here: message text, reasoning, tool arguments and
results, step metadata, tool definitions, task and model names, metadata. Ids (trajectory, task,
tool call) are pseudonymised instead: a redacted id keeps a keyed hash of the original, so two ids
that differ only in a secret stay two ids (splits, pairs and tool results still line up).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.corpus import redact_rules as rules

__all__ = ["GROUPS", "KINDS", "Redactor"]

SECRETS = ("private_key", "jwt", "anthropic_key", "openai_key", "aws_key", "github_token", "slack_token",
           "url_password", "service_token", "high_entropy", "password")
PII = ("email", "iban", "credit_card", "us_ssn", "uk_nino", "passport", "ipv6", "ipv4", "phone")
# priority order: most specific first; then opaque tokens, then whatever value follows a `password=` label
KINDS = (*SECRETS[:-2], *PII, *SECRETS[-2:])
GROUPS = {"secrets": SECRETS, "pii": PII, "ip": ("ipv4", "ipv6"), "all": KINDS}

_PAYLOADS = frozenset({"arguments", "input"})  # tool-call payloads: JSON text, or decoded objects
_KEPT = frozenset({"role", "type", "is_error"})  # closed vocabularies: nothing personal fits in them
_IDS = frozenset({"id", "tool_call_id", "tool_use_id", "trajectory_id", "task_id", "chosen_id", "rejected_id"})
_HEX_ID = re.compile(r"[0-9a-fA-F]+(?:-[0-9a-fA-F]+)*")  # sha/md5 digests, UUIDs: ids, not secrets
_PATH_PART = re.compile(r"[A-Za-z][a-z]{2,}|[0-9a-f]{8,}|[a-z0-9]+(?:[-_][a-z0-9]+)+")
_WORD = re.compile(r"[A-Z]?[a-z]{2,}|[A-Z]{2,}(?![a-z])")
_CHECKS: dict[str, Callable[[str], bool]] = {"credit_card": rules.card, "ipv4": rules.ip, "ipv6": rules.ip,
                                             "phone": rules.phone, "us_ssn": rules.ssn,
                                             "url_password": rules.not_placeholder}


def shannon_entropy(text: str) -> float:
    """Bits per character of `text` by its own character frequencies."""
    return -sum(n / len(text) * math.log2(n / len(text)) for n in Counter(text).values()) if text else 0.0


class Redactor:
    """Replaces PII and secrets with `placeholder.format(kind=...)` and counts what it replaced.

    kinds: names from KINDS and/or GROUPS ("secrets", "pii", "ip", "all"); default all.
    entropy_threshold / min_token_length: a run of min_token_length..256 characters from
    [A-Za-z0-9+/_-] is a `high_entropy` secret when its Shannon entropy reaches the threshold and it
    is not made of words: paths, URLs and model ids (a wordy `/` part), slugs and snake_case (short
    parts between - and _), CamelCase (mostly capitalised words, unless it holds a base64 `+` or `/`)
    are kept. Longer runs are data (images), not credentials.
    Hex digests and UUIDs are ids, kept unless `redact_hex_ids=True`.
    id_key: the key of the hash a redacted id keeps (a workspace's own key: `pipeline.corpus.stages`), so
    the hash of `traj-<phone number>` cannot be reversed by trying every phone number.
    """

    def __init__(self, kinds: Iterable[str] | None = None, placeholder: str = "[REDACTED:{kind}]", *,
                 entropy_threshold: float = 4.0, min_token_length: int = 32,
                 redact_hex_ids: bool = False, id_key: bytes = b"") -> None:
        wanted: set[str] = set()
        for name in ["all"] if kinds is None else ([kinds] if isinstance(kinds, str) else kinds):
            if name not in GROUPS and name not in KINDS:
                raise ValueError(f"unknown redaction kind {name!r}; known: {', '.join([*GROUPS, *KINDS])}")
            wanted.update(GROUPS.get(name, (name,)))
        self.kinds = tuple(kind for kind in KINDS if kind in wanted)
        self.placeholder = placeholder
        placeholder.format(kind="email")  # fail now, not on the first secret
        self.entropy_threshold, self.redact_hex_ids, self.id_key = entropy_threshold, redact_hex_ids, id_key[:64]
        body, longest = r"A-Za-z0-9+/_\-", max(256, min_token_length)
        token = rf"(?<![{body}])[{body}]{{{min_token_length},{longest}}}={{0,2}}(?![{body}=])"
        library = rules.detect_secrets_patterns()
        self._detectors: list[tuple[str, rules.Finder]] = []
        for kind in self.kinds:
            pattern = re.compile(token if kind == "high_entropy" else rules.PATTERNS[kind])
            if kind == "iban":
                self._detectors.append((kind, rules.iban_spans(pattern)))
                continue
            check = self._opaque if kind == "high_entropy" else _CHECKS.get(kind)
            match_check = rules.labelled_value if kind == "password" else None
            self._detectors.append((kind, rules.regex_spans(pattern, check, match_check)))
            self._detectors += [(kind, rules.regex_spans(extra, rules.not_placeholder, group=1 if extra.groups else 0))
                                for extra in library.get(kind, [])]

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
        # identifiers hold no + or / and few digits; random base62 has a digit in six characters
        wordy = words >= 0.75 * len(token) and not re.search(r"[+/]", token) and sum(map(str.isdigit, token)) < 3
        return not wordy and shannon_entropy(token) >= self.entropy_threshold

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """The (start, end, kind) spans redact_text replaces, in order (bench/redact.py counts tokens in them)."""
        taken = bytearray(len(text))  # 1 where a higher-priority detector already claimed the character
        spans: list[tuple[int, int, str]] = []
        for kind, find in self._detectors if text else ():
            for start, end in find(text):
                if start == end or 1 in taken[start:end]:
                    continue
                taken[start:end] = b"\x01" * (end - start)
                spans.append((start, end, kind))
        return sorted(spans)

    def redact_text(self, text: str) -> tuple[str, Counter[str]]:
        """`text` with every detected span replaced, and how many spans of each kind were replaced."""
        counts: Counter[str] = Counter()
        spans = self.find(text)
        if not spans:
            return text, counts
        out, last = [], 0
        for start, end, kind in spans:
            out += [text[last:start], self.placeholder.format(kind=kind)]
            counts[kind] += 1
            last = end
        return "".join([*out, text[last:]]), counts

    def redact_id(self, value: Any, counts: Counter[str] | None = None) -> Any:
        """An id with its secrets redacted and, when that changed it, a keyed hash of the original
        appended: `task-[REDACTED:email]~3f9a0c51d2e4`. An id without findings is returned as it is."""
        if not isinstance(value, str):
            return value
        text, found = self.redact_text(value)
        if counts is not None:
            counts.update(found)
        if not found:
            return value
        return f"{text}~{hashlib.blake2b(value.encode(), key=self.id_key, digest_size=6).hexdigest()}"

    def redact_json(self, text: str | None, counts: Counter[str]) -> str | None:
        """A JSON document (tool definitions, metadata) redacted value by value; unchanged text when clean."""
        return text if not text else self._json(text, counts)

    def redact_data(self, value: Any) -> tuple[Any, Counter[str]]:
        """Redacted copy of decoded JSON (an eval report's per-task answers): every string value, and any
        scalar under a key that names a secret."""
        counts: Counter[str] = Counter()
        return self._data(value, counts), counts

    def redact_fields(self, row: dict[str, Any], counts: Counter[str]) -> dict[str, Any]:
        """A corpus row's own fields: ids pseudonymised (`redact_id`), `tools` as JSON, other strings
        (agent, model, source) as text. Conversation columns are redacted before, as messages."""
        out = {}
        for key, value in row.items():
            if key in _IDS:
                value = self.redact_id(value, counts)
            elif key == "tools":
                value = self.redact_json(value, counts)
            elif key in ("agent", "model", "source") and isinstance(value, str):
                value = self._data(value, counts)
            out[key] = value
        return out

    def redact_messages(self, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Counter[str]]:
        """Redacted copies of chat messages (the input is not modified) and counts per kind.

        Content, reasoning, content blocks, tool results, tool-call arguments, tool names and step
        metadata are redacted; roles and block types are kept, ids pseudonymised (`redact_id`).
        Arguments (and any string value that is a JSON document) are decoded, redacted value by value
        and re-encoded, so they stay valid JSON; a document without findings keeps its exact original text."""
        counts: Counter[str] = Counter()
        return [self._walk(message, counts) for message in messages], counts

    def _walk(self, value: Any, counts: Counter[str], key: str | None = None) -> Any:
        """Message structure: roles and types are kept, ids pseudonymised, text and payloads redacted."""
        if key in _IDS:
            return self.redact_id(value, counts)
        if isinstance(value, str) and (key in _PAYLOADS or value.lstrip()[:1] in ("{", "[")):
            return self._json(value, counts)
        if key in _PAYLOADS or not isinstance(value, dict | list):
            return self._data(value, counts)
        if isinstance(value, dict):
            return {k: v if k in _KEPT else self._labelled(k, v, counts) or self._walk(v, counts, k)
                    for k, v in value.items()}
        return [self._walk(item, counts, key) for item in value]

    def _labelled(self, key: str, value: Any, counts: Counter[str]) -> str | None:
        """The placeholder for a scalar under a key that names a secret ("password", "passport_no",
        "ssn"), whatever the value looks like; None for any other key or value."""
        if isinstance(value, bool) or not isinstance(value, str | int) or not (match := rules.SENSITIVE_KEY.fullmatch(key)):
            return None
        if isinstance(value, str) and (len(value) < 3 or not rules.not_placeholder(value)):
            return None
        kind = next((name for name in ("passport", "us_ssn", "iban") if match.group(name)), "password")
        counts[kind] += 1
        return self.placeholder.format(kind=kind)

    def _json(self, text: str, counts: Counter[str]) -> str:
        found: Counter[str] = Counter()
        try:
            redacted = self._data(json.loads(text), found)
        except (ValueError, RecursionError):  # not JSON after all, truncated, or absurdly deep: plain text
            return self._data(text, counts)
        counts.update(found)
        # json.dumps, not jsonio: arguments keep what they held (an `Infinity` stays one); only strings change
        return json.dumps(redacted, ensure_ascii=False) if found else text

    def _data(self, value: Any, counts: Counter[str]) -> Any:
        """Decoded JSON (or a plain string): every string value is redacted, keys are kept."""
        if isinstance(value, str):
            text, found = self.redact_text(value)
            counts.update(found)
            return text
        if isinstance(value, dict):
            return {k: self._labelled(k, v, counts) or self._data(v, counts) for k, v in value.items()}
        if isinstance(value, list):
            return [self._data(item, counts) for item in value]
        return value
