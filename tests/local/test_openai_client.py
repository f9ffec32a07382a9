"""`make run`'s local mode, driven exactly as a user would: the official `openai` Python client
against the printed endpoint and key, streaming and not, and the usage showing up in billing."""

import json
import os
import re
import signal
import subprocess
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / os.environ.get("HEARTH_PROFILE", "debug") / "hearth-operator"
GGUF = os.environ.get("HEARTH_SMOLLM2_GGUF", "")


SPENDER_YAML = """
apiVersion: hearth.dev/v1alpha1
kind: Tier
metadata:
  name: pricey
spec:
  pricing:
    inputPerMillionTokens: "100000"
    outputPerMillionTokens: "100000"
---
apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata:
  name: spender
  namespace: default
spec:
  tierRef: pricey
  budget:
    monthlyLimit: "0.01"
    action: Block
  apiKeys:
    - name: main
"""


@pytest.fixture(scope="module")
def local_mode(tmp_path_factory):
    if not Path(GGUF).is_file():
        pytest.fail(f"HEARTH_SMOLLM2_GGUF must name the SmolLM2 GGUF (got {GGUF!r}); `make test` sets it")
    state = tmp_path_factory.mktemp("hearth-local")
    # The example folder as shipped, plus a tenant on a pricey tier with a tiny blocking budget.
    config = tmp_path_factory.mktemp("hearth-config")
    for example in (ROOT / "examples" / "local").glob("*.yaml"):
        shutil.copy(example, config)
    (config / "x-spender.yaml").write_text(SPENDER_YAML)
    env = dict(os.environ, SMOLLM2_GGUF=GGUF, RUST_LOG="warn")
    process = subprocess.Popen(
        [str(BINARY), "--log-format", "text", "local", "--config", str(config),
         "--state-dir", str(state), "--base-port", "18100", "--billing-port", "18090", "--gateway-port", "18080"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )
    printed = {}
    lines = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not {"OPENAI_BASE_URL", "OPENAI_API_KEY"} <= printed.keys():
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.match(r"export (OPENAI_BASE_URL|OPENAI_API_KEY)=(\S+)", line)
        if match:
            printed[match.group(1)] = match.group(2)
    if {"OPENAI_BASE_URL", "OPENAI_API_KEY"} - printed.keys():
        process.kill()
        pytest.fail("local mode did not print the endpoint and key:\n" + "".join(lines))
    printed["state"] = state
    yield printed
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("Ctrl-C did not stop local mode within 30 s")
    assert process.returncode == 0, "".join(lines) + process.stdout.read()


def client(printed):
    return openai.OpenAI(base_url=printed["OPENAI_BASE_URL"], api_key=printed["OPENAI_API_KEY"], max_retries=0)


def test_chat_completion_with_usage(local_mode):
    response = client(local_mode).chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=16, temperature=0,
    )
    assert response.choices[0].message.content.strip()
    assert response.usage.prompt_tokens > 5
    assert 0 < response.usage.completion_tokens <= 16


def test_streaming_with_final_usage_chunk(local_mode):
    stream = client(local_mode).chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Count to three."}], max_tokens=12,
        stream=True, stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text.strip()
    assert usage is not None and 0 < usage.completion_tokens <= 12


def test_n_choices_share_the_prompt(local_mode):
    response = client(local_mode).chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=8,
        n=3, temperature=0.9, seed=11,
    )
    assert [choice.index for choice in response.choices] == [0, 1, 2]
    assert all(choice.message.content.strip() for choice in response.choices)
    single = client(local_mode).chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=8,
    )
    assert response.usage.prompt_tokens == single.usage.prompt_tokens, "the prompt is counted once"
    assert 3 <= response.usage.completion_tokens <= 24


def test_models_lists_the_served_model(local_mode):
    ids = [model.id for model in client(local_mode).models.list()]
    assert "smollm2-135m" in ids


def test_bad_request_is_an_openai_error(local_mode):
    with pytest.raises(openai.BadRequestError) as error:
        client(local_mode).chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "hi"}], max_tokens=10**7,
        )
    assert "max_tokens" in str(error.value) or "context" in str(error.value)


def test_usage_reaches_the_invoice(local_mode):
    """The meter records the calls above; local billing pulls it into the invoice (bounded wait)."""
    client(local_mode).chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Say yes."}], max_tokens=4,
    )
    deadline = time.monotonic() + 30
    invoice = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen("http://127.0.0.1:18090/billing/invoices/default/demo") as response:
            invoice = json.load(response)
        if invoice.get("requests", 0) >= 1:
            break
        time.sleep(0.5)
    assert invoice.get("requests", 0) >= 1, invoice
    assert invoice["promptTokens"] > 0 and invoice["completionTokens"] > 0
    assert invoice["lines"][0]["model"] == "smollm2-135m"


def test_unknown_key_is_refused(local_mode):
    bad = openai.OpenAI(base_url=local_mode["OPENAI_BASE_URL"], api_key="hth_not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_the_meter_serves_only_this_runs_gateway_and_billing(local_mode):
    """The first model's meter (base port + 1) refuses a caller without this run's tokens, even one
    forging the gateway's attribution headers, and its usage records too."""
    body = json.dumps({"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    forged = urllib.request.Request(
        "http://127.0.0.1:18101/v1/chat/completions", data=body,
        headers={"content-type": "application/json", "x-hearth-tenant": "default/spender", "x-hearth-priority": "1000"},
    )
    for request in (forged, urllib.request.Request("http://127.0.0.1:18101/usage?after=0")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        assert json.load(refused.value)["error"]["type"] == "authentication_error"


def test_crossing_the_budget_blocks_the_next_request(local_mode):
    """Billing prices the spender's first call (well over its 0.01 limit), sets BudgetExceeded,
    and the gateway refuses the tenant's next call with 403, while the demo tenant goes on."""
    key = (local_mode["state"] / "keys" / "default.spender.main").read_text().strip()
    spender = openai.OpenAI(base_url=local_mode["OPENAI_BASE_URL"], api_key=key, max_retries=0)
    spender.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Say yes."}], max_tokens=4,
    )
    deadline = time.monotonic() + 30
    refused = None
    while time.monotonic() < deadline and refused is None:
        try:
            spender.models.list()
            time.sleep(0.5)
        except openai.PermissionDeniedError as error:
            refused = error
    assert refused is not None, "the gateway still admits a tenant over its blocking budget"
    assert "budget" in str(refused)
    with pytest.raises(openai.PermissionDeniedError):
        spender.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "Again."}], max_tokens=4,
        )
    assert client(local_mode).models.list().data, "other tenants are not affected"


def pid_listening_as(role: str, port: int) -> int:
    """The pid of local mode's `runtime-node <role>` process on 127.0.0.1:`port`."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        text = [a.decode(errors="replace") for a in argv]
        if len(text) > 1 and text[0].endswith("runtime-node") and text[1] == role and (
                f"127.0.0.1:{port}" in text or str(port) in text):
            return int(entry.name)
    raise AssertionError(f"no runtime-node {role} on port {port}")


def demo_requests() -> int:
    with urllib.request.urlopen("http://127.0.0.1:18090/billing/invoices/default/demo") as response:
        return json.load(response).get("requests", 0)


def until(what: str, predicate, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = predicate()
        except (openai.APIError, urllib.error.URLError):
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_processes_are_restarted_and_usage_is_billed_exactly_once(local_mode):
    """As a kubelet would: a meter or engine killed with SIGKILL is started again, the gateway
    answers meanwhile (an error, not a hang), and the usage recorded before the kill is billed
    once."""
    ask = lambda: client(local_mode).chat.completions.create(  # noqa: E731
        model="smollm2-135m", messages=[{"role": "user", "content": "Say yes."}], max_tokens=2)
    until("billing to settle", lambda: demo_requests() >= 1)
    time.sleep(6)  # one more billing pass: everything so far is pulled
    before = demo_requests()
    ask()
    # The meter dies before billing pulls that call (the pass is every 5 s).
    os.kill(pid_listening_as("meter", 18101), signal.SIGKILL)
    with pytest.raises(openai.APIStatusError) as down:
        ask()
    assert down.value.status_code in (502, 503), down.value
    until("the meter back", ask)
    os.kill(pid_listening_as("serve", 18100), signal.SIGKILL)
    until("the engine back", ask, timeout=120)
    until("the three calls billed", lambda: demo_requests() >= before + 3)
    time.sleep(11)  # two more billing passes: nothing counted twice
    assert demo_requests() == before + 3
