"""Redaction: every kind is caught, look-alikes (prices, dates, ids) are not, JSON stays JSON."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.corpus.redact import GROUPS, KINDS, Redactor

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2\nw==\n-----END RSA PRIVATE KEY-----"

REDACTOR = Redactor()


@pytest.mark.parametrize(
    ("text", "secret", "kind"),
    [
        ("write to jane.doe+ci@example.co.uk today", "jane.doe+ci@example.co.uk", "email"),
        ("call +1 415-555-0132 now", "+1 415-555-0132", "phone"),
        ("office +44 20 7946 0958.", "+44 20 7946 0958", "phone"),
        ("mobile +4915112345678", "+4915112345678", "phone"),
        ("fax +44 (0)20 7946 0958", "+44 (0)20 7946 0958", "phone"),
        ("US (555) 123-4567", "(555) 123-4567", "phone"),
        ("US 555-123-4567", "555-123-4567", "phone"),
        ("US 555.123.4567", "555.123.4567", "phone"),
        ("toll free 1-800-555-1234", "1-800-555-1234", "phone"),
        ("card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111", "credit_card"),
        ("card 4111-1111-1111-1111", "4111-1111-1111-1111", "credit_card"),
        ("amex 378282246310005", "378282246310005", "credit_card"),
        ("mc 5500005555555559", "5500005555555559", "credit_card"),
        ("host 203.0.113.42:8080", "203.0.113.42", "ipv4"),
        ("from 10.20.30.40", "10.20.30.40", "ipv4"),
        ("addr 2001:db8::8a2e:370:7334 up", "2001:db8::8a2e:370:7334", "ipv6"),
        ("mapped ::ffff:192.0.2.128", "::ffff:192.0.2.128", "ipv6"),
        ("OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD", "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
         "openai_key"),
        ("key sk-proj-AbCdEf0123456789_abcdefghijKLMNOP-qrstuv", "sk-proj-AbCdEf0123456789_abcdefghijKLMNOP-qrstuv",
         "openai_key"),
        ("key sk-ant-api03-AbCdEf0123456789abcdefghijKLMNOP-qrstu", "sk-ant-api03-AbCdEf0123456789abcdefghijKLMNOP-qrstu",
         "anthropic_key"),
        ("id AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "aws_key"),
        ('aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
         "aws_key"),
        ("token ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "github_token"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzAB", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzAB",
         "github_token"),
        ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
         "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "slack_token"),
        (f"Authorization: Bearer {JWT}", JWT, "jwt"),
        (f"here:\n{PEM}\nthanks", PEM, "private_key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA (truncated)", "b3BlbnNzaC1rZXktdjEAAAAA", "private_key"),
        ("secret=jvNTGrbd5nXKWyUlMxrxT2hHl+v8YUkZLHXneU4d", "jvNTGrbd5nXKWyUlMxrxT2hHl+v8YUkZLHXneU4d", "high_entropy"),
        ("'x-api-key': 'Ab3dE9fGh2JkL5mNp8QrS1tUv4WxY7zA'", "Ab3dE9fGh2JkL5mNp8QrS1tUv4WxY7zA", "high_entropy"),
        ("HF_TOKEN=hf_94wBhPGp6KrrTH3KDchhKpRxZwd6dmHWLL", "hf_94wBhPGp6KrrTH3KDchhKpRxZwd6dmHWLL", "service_token"),
    ],
)
def test_each_kind_is_caught(text: str, secret: str, kind: str) -> None:
    out, counts = REDACTOR.redact_text(text)
    assert counts == Counter({kind: 1}), out
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out


@pytest.mark.parametrize(
    "text",
    [
        "costs $12.34, or 1,234.56 EUR, or $ 1 234 567.89",
        "pi is 3.14159265358979 and the ratio 0.2235294117647059",
        "x: -12.345, y: +67.890, growth +3.5%, +12.345678",
        "on 2026-11-16 at 12:34:56, or 11/16/2026, or 16.11.2026",
        "started 2026-11-16T12:34:56.789Z ended 2026-11-16T12:34:56+00:00 (+1980-02-29 01:02:03)",
        "trajectory 123e4567-e89b-12d3-a456-426614174000 and call_15ca4fcc-ffa1-419a-8748-3bea34b9c043",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 md5 5d41402abc4b2a76b9719d911017c592",
        "commit https://github.com/huggingface/transformers/blob/fc37f38915372c15992b540dfcbbe00a916d4fc6/src/x.py",
        "port 8080, pid 12345, exit 137, unix 1763251200, millis 1763251200000, tel 12345",
        "count 100 200 3000, room 101, ISBN 978-0-596-52068-7, range 10:30-11:45",
        "version 1.2.3, polars 3.4.2.2, dagster-webserver==1.13.28",
        "localhost 127.0.0.1, 0.0.0.0, ::1; slicing arr[1::2]; std::vector<int>; mac 00:1a:2b:3c:4d:5e",
        "path /usr/local/lib/python3.11/site-packages/polars/dataframe/frame.py",
        "model Qwen/Qwen3-Next-80B-A3B-Instruct or nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
        "AbstractSingletonProxyFactoryBean2Impl Win32_GetCurrentProcessExplicitAppUserModelID",
        "this_is_a_very_long_snake_case_identifier_name_v2 Lorem-ipsum-dolor-sit-amet-consectetur-2026",
        "git clone git@github.com:org/repo.git; pip install scikit-learn; sk-learn",
        "card-like 4111 1111 1111 1112 (bad checksum), order 1234567812345678",
        "",
    ],
)
def test_no_false_positives(text: str) -> None:
    assert REDACTOR.redact_text(text) == (text, Counter())


def test_hex_ids_are_kept_unless_configured() -> None:
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    uuid = "123e4567-e89b-12d3-a456-426614174000"
    strict = Redactor(redact_hex_ids=True)
    assert strict.redact_text(f"{digest} {uuid}") == ("[REDACTED:high_entropy] [REDACTED:high_entropy]",
                                                      Counter(high_entropy=2))
    assert strict.redact_text("0" * 40)[1] == Counter()  # not random, not a secret


def test_counts_per_kind_and_most_specific_kind_wins() -> None:
    text = (f"a@x.io wrote b@y.org; call 555-123-4567; token {JWT}; "
            "sk-ant-api03-AbCdEf0123456789abcdefghijKLMNOP-qrstu; key in a block:\n"
            f"{PEM.replace('w==', 'c@d.com')}")
    out, counts = REDACTOR.redact_text(text)
    # the JWT is not also high-entropy, sk-ant is not also openai, the e-mail inside the PEM block is not counted
    assert counts == Counter(email=2, phone=1, jwt=1, anthropic_key=1, private_key=1)
    assert out.count("[REDACTED:") == 6
    assert REDACTOR.redact_text(out) == (out, Counter())  # idempotent


def test_kinds_groups_and_placeholder() -> None:
    text = "mail a@x.io, call 555-123-4567, key AKIAIOSFODNN7EXAMPLE"
    assert Redactor(kinds=["email"]).redact_text(text)[1] == Counter(email=1)
    assert Redactor(kinds="pii").redact_text(text)[1] == Counter(email=1, phone=1)
    assert Redactor(kinds=["secrets"]).redact_text(text)[1] == Counter(aws_key=1)
    assert Redactor(kinds=[]).redact_text(text) == (text, Counter())
    assert Redactor(kinds=["email"], placeholder="<{kind}>").redact_text(text)[0].startswith("mail <email>,")
    assert set(GROUPS["all"]) == set(KINDS)
    with pytest.raises(ValueError, match="unknown redaction kind 'emails'"):
        Redactor(kinds=["emails"])
    with pytest.raises(KeyError):
        Redactor(placeholder="[{what}]")


def test_huge_base64_blobs_are_data_not_secrets() -> None:
    blob = "iVBORw0KGgoAAAANSUhEUgAA" + "Ab3dE9fGh2JkL5mNp8QrS1tUv4WxY7zA" * 5000
    text = f"data:image/png;base64,{blob}"
    assert REDACTOR.redact_text(text) == (text, Counter())


def _messages() -> list[dict]:
    args = {"to": "jane@corp.com", "cc": ["bob@example.org"], "body": 'he said "hi"\ncall +1 415-555-0132',
            "retries": 3, "dry_run": False, "meta": None}
    return [
        {"role": "system", "content": "You are a helpful agent."},
        {"role": "user", "content": "I'm jane@corp.com, my key is sk-proj-AbCdEf0123456789_abcdefghijKLMNOP"},
        {"role": "assistant", "content": None, "reasoning": "Jane (jane@corp.com) wants an e-mail sent.",
         "tool_calls": [{"id": "call_1", "name": "send_email", "arguments": json.dumps(args)},
                        {"id": "call_2", "name": "lookup", "arguments": '{ "q":  "weather" }'}],
         "meta": {"model": "gpt-x", "timestamp": "2026-11-16T12:00:00Z"}},
        {"role": "tool", "tool_call_id": "call_1", "name": "send_email", "is_error": False,
         "content": json.dumps({"ok": True, "relay": "203.0.113.5", "id": "msg-1"})},
        {"role": "tool", "tool_call_id": "call_2", "name": "lookup", "content": "[1] sunny, ask ops@corp.com"},
        {"role": "assistant", "tool_calls": [{"id": "c3", "type": "function",
                                              "function": {"name": "f", "arguments": '{"to": "x@y.io"'}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "mail a@b.io"},
                                          {"type": "tool_use", "id": "tu_1", "name": "f", "input": {"name": "c@d.io"}}]},
    ]


def test_redact_messages_covers_content_reasoning_arguments_and_results() -> None:
    messages = _messages()
    before = copy.deepcopy(messages)
    out, counts = REDACTOR.redact_messages(messages)
    assert messages == before  # the input is not modified
    assert counts == Counter(email=8, openai_key=1, phone=1, ipv4=1)
    assert "jane@corp.com" not in json.dumps(out)
    assert out[0] == messages[0]
    assert out[1]["content"] == "I'm [REDACTED:email], my key is [REDACTED:openai_key]"
    assert out[2]["reasoning"] == "Jane ([REDACTED:email]) wants an e-mail sent."
    assert out[2]["meta"] == messages[2]["meta"]
    sent = json.loads(out[2]["tool_calls"][0]["arguments"])  # still valid JSON, same shape and types
    assert sent == {"to": "[REDACTED:email]", "cc": ["[REDACTED:email]"],
                    "body": 'he said "hi"\ncall [REDACTED:phone]', "retries": 3, "dry_run": False, "meta": None}
    assert out[2]["tool_calls"][1]["arguments"] == '{ "q":  "weather" }'  # untouched text keeps its bytes
    assert [c["id"] for c in out[2]["tool_calls"]] == ["call_1", "call_2"]
    assert json.loads(out[3]["content"]) == {"ok": True, "relay": "[REDACTED:ipv4]", "id": "msg-1"}
    assert {k: out[3][k] for k in ("role", "tool_call_id", "name", "is_error")} == {
        "role": "tool", "tool_call_id": "call_1", "name": "send_email", "is_error": False}
    assert out[4]["content"] == "[1] sunny, ask [REDACTED:email]"  # looks like JSON, is not: plain text
    assert out[5]["tool_calls"][0]["function"]["arguments"] == '{"to": "[REDACTED:email]"'  # broken JSON stays text
    assert out[6]["content"][0]["text"] == "mail [REDACTED:email]"
    assert out[6]["content"][1] == {"type": "tool_use", "id": "tu_1", "name": "f", "input": {"name": "[REDACTED:email]"}}


_SECRETS = st.sampled_from(["jane@corp.com", "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD", "AKIAIOSFODNN7EXAMPLE",
                            "555-123-4567", "4111 1111 1111 1111", JWT, PEM])
_TEXT = st.one_of(st.text(max_size=12), st.tuples(st.text(max_size=8), _SECRETS, st.text(max_size=8)).map(" ".join))
_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _TEXT),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
                     max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(_JSON)
def test_arguments_stay_valid_json(args: object) -> None:
    message = {"role": "assistant", "tool_calls": [{"id": "c", "name": "t", "arguments": json.dumps(args)}]}
    (out,), counts = REDACTOR.redact_messages([message])
    redacted = json.loads(out["tool_calls"][0]["arguments"])

    def shape(value: object) -> object:  # the same structure, keys and non-string values
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        return [shape(v) for v in value] if isinstance(value, list) else type(value) if isinstance(value, str) else value

    assert shape(redacted) == shape(args)
    leftover = json.dumps(list(_leaves(redacted)))
    assert "jane@corp.com" not in leftover and "AKIAIOSFODNN7EXAMPLE" not in leftover
    assert sum(counts.values()) == json.dumps(list(_leaves(redacted))).count("[REDACTED:")


def _leaves(value: object):
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, str):
        yield value
