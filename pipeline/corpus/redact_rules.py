"""The detectors behind `pipeline.corpus.redact`: each one finds the spans of one kind of PII or secret.

Where a well-kept library measured better (bench/redact.py), it does the work: detect-secrets' regex
plugins (Slack webhooks, Stripe, Twilio, SendGrid, npm, PyPI, GitLab, Discord, Telegram, Azure, …),
`phonenumbers` to decide whether a national or 00-prefixed digit group is a dialable number,
python-stdnum for IBAN and US SSN check digits and issued ranges. Hand rules stay where they measured
better: Presidio's pattern recognizers (evaluated, not used) flagged Unix timestamps as phone numbers
and `License :: OSI` as an IPv6 address on the real fixtures, and importing them loads spaCy; detect-
secrets' keyword plugin found 3 of 30 `password=…` forms outside source files.

A finder takes text and yields (start, end) spans; `Redactor` runs them in priority order. The libraries
load on the first candidate they check (~0.1 s), not when the Dagster definitions import this module.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from functools import cache

Finder = Callable[[str], Iterator[tuple[int, int]]]

# detect-secrets plugin (secret_type) → our kind; the plugins are pinned with the package version
DETECT_SECRETS = {
    "Slack Token": "slack_token", "Basic Auth Credentials": "url_password", "Stripe Access Key": "service_token",
    "Twilio API Key": "service_token", "SendGrid API Key": "service_token", "NPM tokens": "service_token",
    "PyPI Token": "service_token", "GitLab Token": "service_token", "Discord Bot Token": "service_token",
    "Telegram Bot Token": "service_token", "Azure Storage Account access key": "service_token",
    "Mailchimp Access Key": "service_token", "Square OAuth Secret": "service_token",
    "Artifactory Credentials": "service_token", "AWS Access Key": "aws_key", "GitHub Token": "github_token",
    "OpenAI Token": "openai_key", "JSON Web Token": "jwt",
}  # not used: the IBM Cloud IAM, IBM COS HMAC, SoftLayer and Cloudant patterns (label + value, like our `password`
#    rule) took 0.85 of 1.65 s on 1.2 MB of fixtures, half of all redaction time
_LABEL = (r"passw(?:or)?d|passphrase|pwd|secret(?:[_-]?(?:access[_-]?)?key)?|api[_-]?key|apikey|access[_-]?(?:key|token)"
          r"|auth[_-]?token|refresh[_-]?token|client[_-]?secret|private[_-]?key")
_SUFFIX = r"(?:[_-]?(?:no|num|number|nr|value))?"
# a JSON key whose scalar value is a secret or an identity number, whatever the value looks like
SENSITIVE_KEY = re.compile(rf"(?i)[\w.-]*?(?:{_LABEL}|(?P<passport>passport)|(?P<us_ssn>ssn|social[_-]?security)"
                           rf"|(?P<iban>iban)){_SUFFIX}")
# not a secret: a variable, a template, a mask, an absolute path (the shell's `pwd`), a redaction already done
_PLACEHOLDER_VALUE = re.compile(r"(?i)\$\{?\w+\}?|\*+|x{3,}|<[^>]*>|none|null|true|false|changeme|redacted|"
                                r"\[REDACTED[^\]]*\]?|%\(?\w+\)?s?|\{\{?\s*[\w.]+\s*\}?\}|[/~][\S]*|[A-Z]:\\\S*")

PATTERNS = {
    "private_key": r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    "jwt": r"(?<![\w-])eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}",
    "anthropic_key": r"(?<![\w-])sk-ant-[\w-]{20,}",
    "openai_key": r"(?<![\w-])sk-[\w-]{20,}",  # also sk-proj-..., sk-svcacct-...
    "aws_key": r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"
               r"|(?i:aws_?secret_?(?:access_?)?key)[\"' :=]{1,5}(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
    "github_token": r"(?<![\w-])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{22,})",
    "slack_token": r"(?<![\w-])xox[abposre]-[A-Za-z0-9-]{10,}",
    # Google API keys and Hugging Face tokens (letters only, so entropy alone misses them): detect-secrets has
    # no plugin for these two; the rest of this kind is detect-secrets'
    "service_token": r"(?<![\w-])(?:AIza[\w-]{35}|hf_[A-Za-z0-9]{30,40})(?![\w-])",
    # the password of scheme://user:password@host, also with an empty user (redis://:pw@host)
    "url_password": r"(?<=://)[^\s:/?#\[\]@]*:(?P<v>[^\s:/?#\[\]@]+)@",
    # label then value: `password=…`, `"api_key": "…"`, `--password …`; code (`password=get()`) is kept by the check
    "password": rf"(?i)(?:(?:{_LABEL}){_SUFFIX}[\"']?[ \t]*[:=][ \t]*|--?(?:password|passwd|pwd)[ =]"
                r"|\bpasswd[ \t]+)(?P<q>[\"']?)(?P<v>[^\s\"'`,;(){}\[\]<>]{3,}?)(?=(?P=q)[.,;:]?(?:\s|$|[\"'`,;)}\]]))",
    # not followed by ":path", which makes git@github.com:org/repo.git an SSH address; domains may be internationalised
    "email": r"(?<![\w.+'-])[\w.+-]+(?:'[\w.+-]+)*@[\w-]+(?:\.[\w-]+)*\.(?:[^\W\d_]{2,}|xn--[a-z0-9-]+)(?![\w-]|:[\w/~])",
    "iban": r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])",
    "us_ssn": r"(?<![\w.-])\d{3}([- ])\d{2}\1\d{4}(?![\w-]|\.\d)",
    "uk_nino": r"(?<!\w)(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?!\w)",
    "passport": r"(?i:passport|reisepass|passeport|pasaporte)[\w .#-]{0,12}?[\s:=#\"']{1,4}"
                r"(?P<v>(?=[A-Z]{0,2}\d)[A-Z0-9]{6,9})(?![\w-])",
    # 13-19 digits, optionally grouped by spaces or dashes, not part of a longer number (0.2235294117647059)
    "credit_card": r"(?<![\d+.])(?<!\d[ -])\d(?:[ -]?\d){12,18}(?![ -]?\d|\.\d)",
    "ipv6": r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)",
    "ipv4": r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)",
    # international (+CC ...) or North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1-555-123-4567;
    # "100 200 3000" is just numbers, so bare groups need the same '-' or '.' between them; national (020 7946 0958)
    # and 00-prefixed (0044 20 7946 0958) numbers are grouped digits that `phonenumbers` must accept
    "phone": r"(?<![\w+.-])(?:\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}|(?:1[ .-]?)?(?:\(\d{3}\) ?\d{3}[ .-]"
             r"|\d{3}([.-])\d{3}\1)\d{4}|(?:\(0\)|0)\d{1,4}(?:[ -]\d{1,8}){1,5})(?!\w|[.-]\d)",
}
_CARD_SCHEMES = re.compile(r"4\d{12}(?:\d{3}){0,2}|5[1-5]\d{14}|2[2-7]\d{14}|3[47]\d{13}"
                           r"|6(?:011|5\d\d)\d{12,15}|35\d{14,17}|3[0689]\d{12}")
_REGIONS = ("GB", "DE", "FR", "NL", "IT", "ES", "CH", "AT", "BE", "IE", "AU", "JP", "IN", "BR", "US")


def card(text: str) -> bool:
    """Luhn alone passes one random number in ten (timestamps, order ids), so the issuer prefix and
    length must fit a real scheme too: Visa, Mastercard, Amex, Discover, JCB, Diners."""
    from stdnum import luhn

    digits = re.sub(r"\D", "", text)
    return bool(_CARD_SCHEMES.fullmatch(digits)) and luhn.is_valid(digits)


def ip(text: str) -> bool:
    """Loopback and 0.0.0.0 are not personal; `3.4.2.2` is a version or section number far more
    often than a host; `1::2` and `100::2` are Python slices, so a two-group IPv6 address needs a
    hex letter or a full group (fe80::1, 2001::1)."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    groups = [g for g in re.split(r"[:.]", text) if g]
    if addr.version == 4:
        return not (addr.is_loopback or addr.is_unspecified) and not all(len(g) == 1 for g in groups)
    wordy = len(groups) >= 3 or any(len(g) == 4 or re.search(r"[a-fA-F]", g) for g in groups)
    return not (addr.is_loopback or addr.is_unspecified) and wordy


def phone(text: str) -> bool:
    """10-15 digits written as a phone number; `+12.345678` is a signed decimal, `+1980-02-29 01` a date.
    A national number (leading 0) must be possible in one of the common regions, per `phonenumbers`."""
    digits = sum(ch.isdigit() for ch in text)
    if text.startswith(("(0)", "0")):
        if text.startswith("00"):
            text = "+" + text[2:]
        elif not 9 <= digits <= 13:
            return False
        else:
            return any(_possible(text.replace("(0)", "0"), region) for region in _REGIONS)
        return _possible(text, None)
    return 10 <= digits <= 15 and not re.fullmatch(r"\+\d+\.\d+|\+\d{4}-\d\d-\d\d.*", text, re.S)


def _possible(text: str, region: str | None) -> bool:
    import phonenumbers

    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(text, region))
    except phonenumbers.NumberParseException:
        return False


def iban_spans(pattern: re.Pattern[str]) -> Finder:
    """IBANs with valid check digits (python-stdnum). A grouped IBAN may run into a following word
    ('… 0130 00 AND'), so shorter group-aligned prefixes are tried before giving up."""
    def find(text: str) -> Iterator[tuple[int, int]]:
        for match in pattern.finditer(text):
            candidate = match.group()
            while len(candidate.replace(" ", "")) >= 15:
                if _iban_ok(candidate):
                    yield match.start(), match.start() + len(candidate)
                    break
                candidate = candidate[:-1].rstrip()
    return find


def _iban_ok(text: str) -> bool:
    """ISO 13616 check digits and the country's length; a national check digit may be wrong (a typo'd
    account number is still someone's account number)."""
    from stdnum import iban as stdnum_iban

    try:
        return bool(stdnum_iban.validate(text, check_country=False))
    except stdnum_iban.ValidationError:
        return False


def not_placeholder(value: str) -> bool:
    return not _PLACEHOLDER_VALUE.fullmatch(value)


def ssn(text: str) -> bool:
    """Issued ranges only (no 000, 666 or 9xx area, no 00 group, no 0000 serial): python-stdnum."""
    from stdnum.us import ssn as stdnum_ssn

    return stdnum_ssn.is_valid(re.sub(r"\D", "", text))


def labelled_value(match: re.Match[str]) -> bool:
    """A value after a password-like label is a secret unless it is code or a placeholder:
    `password=password`, `password = self.password`, `secret: str`, `${TOKEN}`, `***`, `<your key>`."""
    value = match.group("v")
    if not not_placeholder(value) or re.fullmatch(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|str|int|bytes|string|optional|any",
                                                  value, re.I):
        return False
    label = re.sub(r"[\W_]", "", match.group()[:match.start("v") - match.start()]).lower()
    return not label.endswith(re.sub(r"[\W_]", "", value).lower())


@cache
def detect_secrets_patterns() -> dict[str, list[re.Pattern[str]]]:
    """Our kind → the regexes of detect-secrets' pattern plugins for it (loaded once, on first use)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector

    out: dict[str, list[re.Pattern[str]]] = {}
    for secret_type, plugin in get_mapping_from_secret_type_to_class().items():
        if issubclass(plugin, RegexBasedDetector) and secret_type in DETECT_SECRETS:
            out.setdefault(DETECT_SECRETS[secret_type], []).extend(plugin().denylist)
    return out


def regex_spans(pattern: re.Pattern[str], check: Callable[[str], bool] | None = None,
                match_check: Callable[[re.Match[str]], bool] | None = None, group: int | str | None = None) -> Finder:
    """Spans of `pattern` that pass `check` (on the secret) and `match_check` (on the match). The secret is
    `group`: by default the group named "v" where a pattern has one (the value without its label)."""
    chosen = group if group is not None else "v" if "v" in pattern.groupindex else 0

    def find(text: str) -> Iterator[tuple[int, int]]:
        for match in pattern.finditer(text):
            which = chosen if match.group(chosen) is not None else 0
            if (check and not check(match.group(which))) or (match_check and not match_check(match)):
                continue
            yield match.span(which)
    return find
