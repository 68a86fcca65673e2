"""The web console in a real browser (Debian's headless Chromium driven by Playwright) against a
live mesh with auth on and traffic: every page shows what the API says, the overview follows new
requests without a reload, keys are created and revoked from the page, the playground streams,
and the browser reports no errors. A screenshot of each page goes to var/test-artefacts/console/.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from playwright.sync_api import Browser, expect

from hybridinference.common.settings import CapabilitySettings
from hybridinference.logger.v1 import logger_pb2, logger_pb2_grpc
from support.auth_mesh import AuthMesh, running_auth_mesh
from support.browser import WatchedPage, chromium, new_page
from support.mesh import Mesh, mesh_config
from support.polling import poll

SECRET_ENV = "HI_E2E_CONSOLE_SECRET"
PROMPT = "hello console"
OK_REQUESTS = 12
FAILED_REQUESTS = 4
LIVE_TIMEOUT_S = 30
# What shows that a page has its data.
LOADED = {
    "overview": "#overview-summary table",
    "endpoints": "#endpoints-table table",
    "requests": "#requests-results table",
    "usage": "#usage-table table",
    "keys": "#keys-table table",
    "playground": "#model-a option",
}


@dataclass
class Console:
    auth: AuthMesh
    admin_key: str
    user_key: str

    @property
    def url(self) -> str:
        return self.auth.mesh.http_url

    def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        key = self.admin_key if key is None else key
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.get(f"{self.url}{path}", headers=headers, params=params, timeout=10)

    def api(self, path: str, **params: Any) -> Any:
        reply = self.get(path, **params)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def chat(self, model: str, stream: bool = False) -> int:
        reply = httpx.post(
            f"{self.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {self.user_key}"},
            json={
                "model": model,
                "stream": stream,
                "messages": [{"role": "user", "content": PROMPT}],
            },
            timeout=20,
        )
        return reply.status_code

    def logged(self, count: int) -> None:
        """Waits until the logger has stored ``count`` records."""

        def stored() -> bool | None:
            records = self.api("/api/v1/admin/requests", page_size=1000)["records"]
            return True if len(records) >= count else None

        poll(stored, 20, f"{count} stored request records", every_s=0.1)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    config = mesh_config(tmp)
    config["logger"]["capture_content"] = True
    # hi-sim can do everything the chat surface offers (the playground sends tools to it).
    config["models"][0]["capabilities"] = CapabilitySettings.everything().model_dump()
    with running_auth_mesh(tmp, SECRET_ENV, config) as auth:
        # The user key first: once the gateway knows the (newer) admin key it knows both.
        _, user_key = auth.create_key()
        _, admin_key = auth.create_key("--admin")
        running = Console(auth, admin_key, user_key)
        poll(
            lambda: True if running.get("/api/v1/admin/keys").status_code == 200 else None,
            10,
            "the admin key on the gateway",
            every_s=0.05,
        )
        for _ in range(OK_REQUESTS):
            assert running.chat("hi-sim") == 200
        for _ in range(FAILED_REQUESTS):
            # The endpoint dies after 3 streamed tokens: logged as UNAVAILABLE at sim-dying.
            running.chat("hi-dying", stream=True)
        running.logged(OK_REQUESTS + FAILED_REQUESTS)
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@contextmanager
def signed_in(
    browser: Browser, console: Console, page_name: str, **size: int
) -> Iterator[WatchedPage]:
    """A page signed in with the admin key on ``#/page_name``; no browser errors by the end."""
    with new_page(browser, **size) as watched:
        page = watched.page
        page.goto(f"{console.url}/console/")
        page.get_by_label("Admin API key").fill(console.admin_key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("#overview-summary table")
        if page_name != "overview":
            page.get_by_role("link", name=page_name.capitalize()).click()
        yield watched
        assert_labelled(watched)
        assert watched.errors == []


def assert_labelled(watched: WatchedPage) -> None:
    """Every form control has a label a screen reader can read."""
    unlabelled = watched.page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter((e) => !e.closest('[hidden]') && !e.labels.length)
            .filter((e) => !e.getAttribute('aria-label'))
            .map((e) => e.outerHTML)"""
    )
    assert unlabelled == []


def js_number(value: float, digits: int = 0) -> str:
    """What the page's fmt() shows (en-US grouping)."""
    return f"{value:,.{digits}f}"


def cell(watched: WatchedPage, selector: str) -> str:
    return watched.page.locator(selector).inner_text().strip()


def test_without_the_admin_key_data_calls_are_refused_and_the_page_asks_for_it(
    browser: Browser, console: Console
) -> None:
    for path in ("/api/v1/admin/traffic", "/api/v1/admin/requests", "/api/v1/admin/usage"):
        assert console.get(path, key="").status_code == 401
        assert console.get(path, key=console.user_key).status_code == 403
    with new_page(browser) as watched:
        page = watched.page
        page.goto(f"{console.url}/console/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(page.locator("#nav")).to_be_hidden()
        # A key that is not an admin's: the page's first data call is refused (403).
        page.get_by_label("Admin API key").fill(console.user_key)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#login-error")).to_contain_text("not an admin key")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        watched.screenshot("login")


def test_with_auth_off_the_page_says_why_no_key_works(browser: Browser, mesh: Mesh) -> None:
    reply = httpx.get(f"{mesh.http_url}/api/v1/admin/traffic", timeout=10)
    assert reply.status_code == 403
    with new_page(browser) as watched:
        page = watched.page
        page.goto(f"{mesh.http_url}/console/")
        page.get_by_label("Admin API key").fill("hi-anything")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#login-error")).to_contain_text("Auth is off")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_overview_matches_the_api_and_follows_new_requests(
    browser: Browser, console: Console
) -> None:
    with signed_in(browser, console, "overview") as watched:
        row = '#overview-summary tr[data-model="hi-sim"]'
        hour = console.api("/api/v1/admin/traffic", window_seconds=3600, bucket_seconds=60)
        sim = next(s for s in hour["series"] if s["model"] == "hi-sim")["total"]
        before = int(sim["requests"])
        assert cell(watched, f'{row} td[data-field="requests"]') == js_number(before)
        assert cell(watched, f'{row} td[data-field="tokens"]') == js_number(
            int(sim["total_tokens"])
        )
        assert cell(watched, f'{row} td[data-field="ttft_p50"]') == js_number(sim["ttft_p50_ms"], 1)
        dying = '#overview-summary tr[data-model="hi-dying"] td[data-field="errors"]'
        assert cell(watched, dying).startswith(js_number(FAILED_REQUESTS))
        # One chart per metric, drawn by uPlot.
        expect(watched.page.locator("#overview-charts .uplot")).to_have_count(6)
        watched.screenshot("overview")

        more = 5
        for _ in range(more):
            assert console.chat("hi-sim") == 200
        # Live: the page's own refresh picks them up, no reload.
        expect(watched.page.locator(f'{row} td[data-field="requests"]')).to_have_text(
            js_number(before + more), timeout=LIVE_TIMEOUT_S * 1000
        )


def test_endpoints_match_the_router_and_show_recent_errors(
    browser: Browser, console: Console
) -> None:
    with signed_in(browser, console, "endpoints") as watched:
        page = watched.page
        page.wait_for_selector("#endpoints-table table")
        endpoints = console.api("/api/v1/admin/endpoints")["endpoints"]
        shown = page.locator("#endpoints-table tr[data-endpoint]")
        expect(shown).to_have_count(len(endpoints))
        for endpoint in endpoints:
            row = f'#endpoints-table tr[data-endpoint="{endpoint["id"]}"]'
            assert cell(watched, f'{row} td[data-field="model"]') == endpoint["model"]
            health = "healthy" if endpoint["healthy"] else "down"
            assert cell(watched, f'{row} td[data-field="health"]') == health
        sim_a = next(e for e in endpoints if e["id"] == "sim-a")
        requests_cell = '#endpoints-table tr[data-endpoint="sim-a"] td[data-field="requests"]'
        assert cell(watched, requests_cell) == js_number(int(sim_a["requests_total"]))

        page.get_by_role("button", name="sim-dying").click()
        failed = console.api(
            "/api/v1/admin/requests", endpoint="sim-dying", errors_only="true", page_size=20
        )["records"]
        assert len(failed) >= FAILED_REQUESTS
        rows = page.locator("#endpoint-errors tr[data-request-id]")
        expect(rows).to_have_count(len(failed))
        shown_ids = [rows.nth(i).get_attribute("data-request-id") for i in range(len(failed))]
        assert shown_ids == [r["request_id"] for r in failed]
        watched.screenshot("endpoints")


def test_requests_list_filters_and_detail(browser: Browser, console: Console) -> None:
    with signed_in(browser, console, "requests") as watched:
        page = watched.page
        newest = console.api("/api/v1/admin/requests", page_size=50)["records"]
        rows = page.locator("#requests-results tr[data-request-id]")
        expect(rows).to_have_count(len(newest))
        assert rows.first.get_attribute("data-request-id") == newest[0]["request_id"]
        watched.screenshot("requests")

        page.get_by_label("Model").fill("hi-dying")
        page.get_by_role("button", name="Apply").click()
        dying = console.api("/api/v1/admin/requests", model="hi-dying")["records"]
        expect(rows).to_have_count(len(dying))
        models = page.locator('#requests-results td[data-field="model"]').all_inner_texts()
        assert set(models) == {"hi-dying"}

        # A time range in the future holds nothing (the page sends it as UTC RFC 3339).
        page.get_by_label("From (local time)").fill("2099-01-01T00:00")
        page.get_by_role("button", name="Apply").click()
        expect(rows).to_have_count(0)
        expect(page.locator("#requests-results")).to_contain_text("Nothing yet.")
        page.get_by_label("From (local time)").fill("")

        page.get_by_label("Model").fill("hi-sim")
        page.get_by_role("button", name="Apply").click()
        record = console.api("/api/v1/admin/requests", model="hi-sim", page_size=1)["records"][0]
        page.get_by_role("link", name=f"Request {record['request_id']}").click()
        page.wait_for_selector("#request-detail")
        assert cell(watched, 'dd[data-field="Endpoint"]') == record["endpoint"] == "sim-a"
        assert cell(watched, 'dd[data-field="Status"]') == "OK"
        total = int(record["usage"]["total_tokens"])
        assert cell(watched, 'dd[data-field="Total tokens"]') == js_number(total)
        watched.screenshot("request-detail")


def test_request_detail_shows_captured_content(browser: Browser, console: Console) -> None:
    # The gateway does not fill a record's prompt and response yet (content capture ends at the
    # logger), so this record comes through the logger's own WriteRecords, as a gateway's would.
    record = logger_pb2.RequestRecord(
        request_id=f"console-{uuid.uuid4().hex[:12]}",
        surface="openai",
        requested_model="hi-sim",
        endpoint="sim-a",
        status="OK",
        attempts=2,
        fallbacks=1,
        hedged=True,
        ttft_ms=12.5,
        latency_ms=40.25,
        prompt=PROMPT,
        response="hello operator",
    )
    record.started_at.GetCurrentTime()
    with grpc.insecure_channel(console.auth.mesh.address("logger")) as channel:
        reply = logger_pb2_grpc.LoggerServiceStub(channel).WriteRecords(
            logger_pb2.WriteRecordsRequest(records=[record]), timeout=10
        )
    assert reply.accepted == 1
    poll(
        lambda: (
            True
            if console.get(f"/api/v1/admin/requests/{record.request_id}").status_code == 200
            else None
        ),
        10,
        "the written record",
        every_s=0.05,
    )
    with signed_in(browser, console, "requests") as watched:
        watched.page.goto(f"{console.url}/console/#/requests/{record.request_id}")
        watched.page.wait_for_selector("#request-detail")
        assert cell(watched, "#request-prompt") == PROMPT
        assert cell(watched, "#request-response") == "hello operator"
        assert cell(watched, 'dd[data-field="Fallbacks"]') == "1"
        assert cell(watched, 'dd[data-field="Hedged"]') == "yes"
        watched.screenshot("request-detail-captured")


def test_usage_table_chart_and_csv_match_the_api(browser: Browser, console: Console) -> None:
    with signed_in(browser, console, "usage") as watched:
        page = watched.page
        page.wait_for_selector("#usage-table table")
        buckets = console.api("/api/v1/admin/usage")["buckets"]
        rows = page.locator("#usage-table tbody tr")
        expect(rows).to_have_count(len(buckets))
        shown = page.locator('#usage-table td[data-field="total_tokens"]').all_inner_texts()
        assert shown == [js_number(int(b["total_tokens"])) for b in buckets]
        expect(page.locator("#usage-charts .uplot")).to_have_count(2)
        watched.screenshot("usage")

        with page.expect_download() as download:
            page.get_by_role("link", name="Export CSV").click()
        path = download.value.path()
        exported = list(csv.DictReader(io.StringIO(path.read_text())))
        assert [(r["day"], r["api_key_id"], r["model"], r["total_tokens"]) for r in exported] == [
            (b["day"][:10], b["api_key_id"], b["model"], b["total_tokens"]) for b in buckets
        ]


def test_a_key_created_on_the_page_works_until_revoked_there(
    browser: Browser, console: Console
) -> None:
    with signed_in(browser, console, "keys") as watched:
        page = watched.page
        page.wait_for_selector("#keys-table table")
        page.get_by_label("Name").fill("console-made")
        page.get_by_label("Requests per minute").fill("50")
        page.get_by_role("button", name="Create key").click()
        new_key = page.locator("#new-key-value").inner_text().strip()
        assert new_key.startswith("hi-")
        watched.screenshot("keys")
        assert console.get("/v1/models", key=new_key).status_code == 200
        keys = console.api("/api/v1/admin/keys")["keys"]
        made = next(k for k in keys if k["name"] == "console-made")
        assert made["limits"] == {"requests_per_minute": "50"}
        assert new_key not in str(keys)

        page.get_by_role("button", name="Set limits of console-made").click()
        page.get_by_role("dialog").get_by_label("Requests per minute").fill("9")
        page.get_by_role("button", name="Save limits").click()
        row = page.locator(f'#keys-table tr[data-key-id="{made["id"]}"] td[data-field="limits"]')
        expect(row).to_have_text("Requests per minute: 9")
        keys = console.api("/api/v1/admin/keys")["keys"]
        assert next(k for k in keys if k["id"] == made["id"])["limits"] == {
            "requests_per_minute": "9"
        }

        page.get_by_role("button", name="Revoke console-made").click()
        page.get_by_role("button", name="Revoke key").click()
        expect(page.locator(f'#keys-table tr[data-key-id="{made["id"]}"]')).to_have_count(0)
        # The answering gateway applies it at once; with one gateway that is every call.
        assert console.get("/v1/models", key=new_key).status_code == 401


def test_playground_streams_two_models_side_by_side(browser: Browser, console: Console) -> None:
    with signed_in(browser, console, "playground") as watched:
        page = watched.page
        page.get_by_label("Model", exact=True).select_option("hi-sim")
        page.get_by_label("Compare with").select_option("hi-slow")
        page.get_by_label("Max tokens").fill("8")
        page.get_by_role("button", name="Send").click()
        for pane in ("pane-a", "pane-b"):
            page.wait_for_selector(f"#{pane}-stats[data-done]", timeout=20_000)
            assert page.locator(f"#{pane}-output").inner_text().strip() != ""
            assert "TTFT" in page.locator(f"#{pane}-stats").inner_text()
        stats = page.locator("#pane-b-stats").inner_text()
        assert "8 tokens" in stats
        request_id = stats.rsplit("request ", 1)[1].strip()
        record = poll(
            lambda: (
                console.api("/api/v1/admin/requests/" + request_id)
                if console.get("/api/v1/admin/requests/" + request_id).status_code == 200
                else None
            ),
            10,
            "the playground's request in the log",
            every_s=0.1,
        )
        assert record["record"]["requested_model"] == "hi-slow"
        assert record["record"]["stream"] is True
        watched.screenshot("playground")


def test_playground_offers_tools_and_shows_the_tool_call(
    browser: Browser, console: Console
) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    with signed_in(browser, console, "playground") as watched:
        page = watched.page
        page.get_by_label("Model", exact=True).select_option("hi-sim")
        page.get_by_text("Tools and structured output").click()
        page.get_by_label("Tools", exact=True).fill(json.dumps([tool]))
        page.get_by_role("button", name="Send").click()
        page.wait_for_selector("#pane-a-stats[data-done]", timeout=20_000)
        calls = page.locator("#pane-a-tool-calls").inner_text()
        name, _, arguments = calls.partition("(")
        assert name == "get_weather", calls
        assert "city" in json.loads(arguments.rstrip(")"))
        # Broken JSON is the page's own error, before anything is sent.
        page.get_by_label("Tools", exact=True).fill("[not json")
        page.get_by_role("button", name="Send").click()
        page.wait_for_selector('#pane-a-stats[data-done="error"]', timeout=20_000)
        assert "Tools is not valid JSON" in page.locator("#pane-a-stats").inner_text()
        watched.screenshot("playground-tools")


def test_pages_fit_a_phone(browser: Browser, console: Console) -> None:
    with signed_in(browser, console, "overview", width=390, height=844) as watched:
        page = watched.page
        for name, loaded in LOADED.items():
            page.goto(f"{console.url}/console/#/{name}")
            page.wait_for_selector(loaded, state="attached")
            # Wide tables scroll inside their own box; the page itself never scrolls sideways.
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, name
        page.goto(f"{console.url}/console/#/overview")
        page.wait_for_selector("#overview-charts .uplot")
        watched.screenshot("overview-phone")


def test_every_page_is_reachable_from_the_keyboard(browser: Browser, console: Console) -> None:
    with signed_in(browser, console, "overview") as watched:
        page = watched.page
        page.locator("body").focus()
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent")
        assert focused == "Skip to content"
        reached: list[str] = []
        for _ in range(10):
            page.keyboard.press("Tab")
            reached.append(page.evaluate("document.activeElement.textContent"))
        assert [name.capitalize() for name in LOADED][:6] == [
            r for r in reached if r.lower() in LOADED
        ][:6]
        # From the skip link, Tab to "Keys" and follow it with Enter.
        page.get_by_role("link", name="Skip to content").focus()
        for _ in range(list(LOADED).index("keys") + 1):
            page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Keys"
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="API keys")).to_be_visible()
        page.wait_for_selector(LOADED["keys"])
        # The skip link moves focus to the content without leaving the page.
        page.get_by_role("link", name="Skip to content").focus()
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
        expect(page.get_by_role("heading", name="API keys")).to_be_visible()
