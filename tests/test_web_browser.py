"""The dashboard in a real browser: Debian's chromium driven by Playwright,
against a real `jobd web` process and a real daemon (tests/conftest.py).

One browser and one daemon + web process per module; each test gets a fresh
page. Every test waits on conditions with deadlines, never on sleeps.
`JOBD_SCREENSHOTS=1` copies the screenshots of the last test into docs/img.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProc, wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
from web_browser_support import WebProc, chromium_or_skip, launch  # noqa: E402

D = "jobd_dashhandlers."
HANDLERS = "jobd_testhandlers,jobd_dashhandlers"
CONFIG = '[queues."emails"]\nworkers = 1\n'
DOCS_IMG = Path(__file__).parent.parent / "docs" / "img"
XSS = "<img src=x onerror=alert(1)>"
VIEWPORT = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000


class Stack:
    def __init__(self, daemon: DaemonProc, web: WebProc) -> None:
        self.daemon = daemon
        self.web = web
        self.client = daemon.client()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    chromium_or_skip()
    root = tmp_path_factory.mktemp("dash")
    daemon = DaemonProc(root, workers=2, handlers=HANDLERS, config=CONFIG).start()
    web = WebProc(root, daemon.socket)
    try:
        web.start()
        yield Stack(daemon, web)
    finally:
        web.stop()
        daemon.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium_or_skip()
    with playwright_api.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


class Page:
    """A page plus what it did: every URL it requested, dialogs, script errors."""

    def __init__(self, context: Any, base: str) -> None:
        self.context = context
        self.base = base
        self.pw = context.new_page()
        self.pw.set_default_timeout(TIMEOUT_MS)
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.pw.on("request", lambda r: self.requests.append(r.url))
        self.pw.on("dialog", self._dialog)
        self.pw.on("pageerror", lambda e: self.errors.append(str(e)))
        self.pw.on("console", self._console)

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            self.errors.append(msg.text)     # an inline style or script the policy refused

    def _dialog(self, d: Any) -> None:
        self.dialogs.append(d.message)
        d.dismiss()

    def go(self, route: str) -> Any:
        self.pw.goto(f"{self.base}/#{route}")
        return self.pw

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if not (u == self.base or u.startswith(self.base + "/"))]


@pytest.fixture
def page(stack: Stack, browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, locale="en-US", timezone_id="UTC")
    p = Page(context, stack.web.url)
    yield p
    context.close()
    assert not p.errors, p.errors
    assert not p.dialogs, p.dialogs
    assert not p.foreign_requests(), p.foreign_requests()


def status_of(stack: Stack, job_id: str) -> str:
    return str(stack.client.status(job_id).status)


# --- a job's progress, live ------------------------------------------------------------------------

def test_progress_bar_reaches_100_live(stack: Stack, page: Page, tmp_path: Path) -> None:
    """Each step the handler reports shows on the open job page, without a reload."""
    gate = str(tmp_path / "gate")
    job_id = "dash/progress:1+a@b"      # "/", ":", "+" and "@" must survive every path
    pw = page.go("/jobs/dash/progress:1+a@b")
    pw.wait_for_selector("h1 >> text=dash/progress:1+a@b")
    # The page's event stream is open (so following the job flow) before the job
    # exists: its first events are not missed, and no later one comes until step 1.
    pw.locator("#live.st-live").wait_for()
    pw.evaluate("window.__sameDocument = true")
    navigations: list[str] = []
    pw.on("framenavigated", lambda f: navigations.append(f.url))

    stack.client.submit(D + "stepped", [gate, 4], job_id=job_id)
    bar = pw.locator("[data-test=progress] progress")
    bar.wait_for()
    seen = []
    for step in range(1, 5):
        Path(f"{gate}.{step}").touch()
        want = str(25 * step)
        pw.wait_for_function("v => Number(document.querySelector('[data-test=progress] progress')?.value)"
                             " === Number(v)", arg=want)
        seen.append(pw.locator("[data-test=progress] .pct").inner_text())
        if step == 2:       # two points of progress: a rate, so an ETA
            pw.wait_for_function("() => /ETA/.test(document.querySelector('[data-test=eta]').textContent)")
    pw.wait_for_selector("h1[data-status=completed]")
    assert seen[:3] == ["25 % · step 1 of 4", "50 % · step 2 of 4", "75 % · step 3 of 4"], seen
    assert seen[3].startswith("100 %")
    assert pw.evaluate("window.__sameDocument") is True
    assert navigations == [], navigations
    assert status_of(stack, job_id) == "completed"


# --- dead letters grouped, one group retried -------------------------------------------------------

def test_dead_letters_grouped_and_group_retried(stack: Stack, page: Page, tmp_path: Path) -> None:
    gate = str(tmp_path / "upstream-up")
    c = stack.client
    down = [c.submit(D + "upstream_down", [gate, host]) for host in (11, 12, 13)]
    bad = c.submit(D + "bad_input", ["zz"])
    wait_until(lambda: all(status_of(stack, j) == "dead_letter" for j in [*down, bad]),
               what="the four jobs to be dead letters")

    pw = page.go("/dead")
    group = pw.locator("[data-test=group]", has_text=D + "upstream_down")
    group.wait_for()
    assert group.locator(".count").inner_text() == "3"
    assert "refused the connection" in group.inner_text()
    assert pw.locator("[data-test=group]", has_text=D + "bad_input").count() == 1

    Path(gate).touch()          # the upstream is back: the retried jobs succeed
    group.locator("[data-test=group-retry_many]").click()
    dialog = pw.locator("dialog[open]")
    assert "3 jobs match" in dialog.locator("[data-test=dry-run-count]").inner_text()
    assert all(status_of(stack, j) == "dead_letter" for j in down)     # a dry run changed nothing
    dialog.locator("[data-test=confirm]").click()
    wait_until(lambda: all(status_of(stack, j) == "completed" for j in down), what="the group to run again")
    assert status_of(stack, bad) == "dead_letter"                        # the other group untouched
    group.wait_for(state="detached")                                       # the page followed, live


# --- queues: pause and resume ----------------------------------------------------------------------

def queue(stack: Stack, name: str) -> dict[str, Any]:
    return next(q for q in stack.client.queues() if q["name"] == name)


def test_pause_and_resume_a_queue(stack: Stack, page: Page) -> None:
    pw = page.go("/queues")
    row = pw.locator("[data-test=queue][data-key=emails]")
    row.locator("[data-test=pause]").click()
    dialog = pw.locator("dialog[open]")
    dialog.locator("input[name=reason]").fill("deploy <b>42</b>")
    dialog.locator("[data-test=confirm]").click()
    wait_until(lambda: queue(stack, "emails")["paused"], what="the queue to be paused")
    assert queue(stack, "emails")["paused"]["reason"] == "deploy <b>42</b>"
    row.locator("[data-test=resume]").wait_for()
    assert "“deploy <b>42</b>”" in row.inner_text()
    assert queue(stack, "default")["paused"] is None

    row.locator("[data-test=resume]").click()
    wait_until(lambda: queue(stack, "emails")["paused"] is None, what="the queue to be resumed")
    row.locator("[data-test=pause]").wait_for()


# --- workers: scale --------------------------------------------------------------------------------

def pool(stack: Stack, name: str) -> list[dict[str, Any]]:
    return [w for w in stack.client.workers() if w["queue"] == name and w["status"] != "stopping"]


def test_scale_workers_from_the_page(stack: Stack, page: Page) -> None:
    pw = page.go("/workers")
    pw.locator("[data-test=worker]").first.wait_for()
    box = pw.locator("[data-test=scale-emails]")
    box.fill("2")
    box.press("Enter")
    wait_until(lambda: len(pool(stack, "emails")) == 2, what="a second worker for queue emails")
    pw.wait_for_function("() => document.querySelectorAll('[data-test=worker]').length === 4")

    box.fill("1")
    pw.locator("form[data-key=emails] button[type=submit]").click()
    wait_until(lambda: len(pool(stack, "emails")) == 1, what="queue emails back to one worker")


# --- what a job holds is shown as text -------------------------------------------------------------

def test_markup_in_a_job_renders_as_text(stack: Stack, page: Page) -> None:
    c = stack.client
    job_id = c.submit("jobd_testhandlers.echo", [XSS], kwargs={"note": "<script>alert(2)</script>"},
                      tags={"html": "<b>bold</b>"}, name="<i>name</i>")
    c.wait(job_id, timeout=15)
    pw = page.go(f"/jobs/{job_id}")
    args = pw.locator("pre.args")
    args.wait_for()
    assert XSS in args.inner_text()
    assert XSS in pw.locator("pre.result").inner_text()
    assert "<b>bold</b>" in pw.locator("[data-test=fields]").inner_text()
    assert "<i>name</i>" in pw.locator("[data-test=fields]").inner_text()
    assert pw.locator("main img, main script, main b, main i").count() == 0

    pw = page.go(f"/jobs?q={job_id}")
    pw.locator(f"tr[data-key='{job_id}']").wait_for()
    assert "html=<b>bold</b>" in pw.locator(f"tr[data-key='{job_id}']").inner_text()
    assert pw.locator("main img").count() == 0
    # the page fixture asserts that no dialog (alert) opened


# --- keyboard --------------------------------------------------------------------------------------

def test_keyboard_shortcuts_and_dialogs(stack: Stack, page: Page) -> None:
    pw = page.go("/")
    pw.locator("h1", has_text="Overview").wait_for()
    pw.keyboard.press("g")
    pw.keyboard.press("j")
    pw.locator("h1", has_text="Jobs").wait_for()
    pw.keyboard.press("/")
    assert pw.evaluate("document.activeElement.name") == "q"
    pw.keyboard.press("Escape")
    pw.locator("main").focus()
    pw.keyboard.press("?")
    pw.locator("dialog[open]", has_text="Keyboard shortcuts").wait_for()
    pw.keyboard.press("Escape")
    pw.locator("dialog").wait_for(state="detached")


# --- a hidden tab lets go of its stream --------------------------------------------------------------

HIDE = """hidden => {
  Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_a_hidden_tab_closes_its_stream_and_reloads_when_shown(stack: Stack, page: Page) -> None:
    pw = page.go("/queues")
    pw.locator("#live.st-live").wait_for()
    events = [u for u in page.requests if "/api/events" in u]
    pw.evaluate(HIDE, True)
    pw.locator("#live.st-paused").wait_for()
    queues_before = sum("/api/queues" in u for u in page.requests)
    pw.evaluate(HIDE, False)
    pw.locator("#live.st-live").wait_for()
    assert len([u for u in page.requests if "/api/events" in u]) == len(events) + 1   # one new stream
    wait_until(lambda: sum("/api/queues" in u for u in page.requests) > queues_before,
               what="the page to reload what it shows")


# --- schedules: recent runs by outcome ------------------------------------------------------------

def test_a_schedules_recent_runs_show_by_outcome(stack: Stack, page: Page) -> None:
    c = stack.client
    c.schedule_add("each-second", "* * * * * *", "jobd_testhandlers.noop")
    try:
        wait_until(lambda: c.list(status="completed", ids=[
            j.id for j in c.list(limit=1000).jobs if j.id.startswith("sched:each-second:")]).total >= 2,
            what="two runs of the schedule")
        pw = page.go("/schedules")
        block = pw.locator("a.block.s-completed[title^='sched:each-second:']").first
        block.wait_for()
        assert "completed" in (block.get_attribute("title") or "")
        assert (block.get_attribute("href") or "").startswith("#/jobs/sched")     # links to the run
    finally:
        c.schedule_remove("each-second")


# --- every page, screenshots, nothing leaves the origin --------------------------------------------

PAGES = [("overview", "/", "Overview"), ("jobs", "/jobs", "Jobs"), ("job", None, "Job"),
         ("dead-letters", "/dead", "Dead letters"), ("queues", "/queues", "Queues"),
         ("workers", "/workers", "Workers"), ("schedules", "/schedules", "Schedules"),
         ("alerts", "/alerts", "Alerts")]


def some_activity(stack: Stack, tmp_path: Path) -> str:
    """Jobs of every kind for the screenshots; returns a running job with progress."""
    c = stack.client
    c.schedule_add("nightly-report", "30 2 * * *", "jobd_testhandlers.noop")
    c.schedule_add("every-5-min", "*/5 * * * *", "jobd_testhandlers.noop")
    for i in range(12):
        c.submit("jobd_testhandlers.add", [i, 1], tags={"tenant": str(i % 3)})
    for host in (21, 22):
        c.submit(D + "upstream_down", [str(tmp_path / "never"), host])
    c.submit(D + "bad_input", ["2026-13-45"])
    gate = str(tmp_path / "shot")
    running = c.submit(D + "stepped", [gate, 3], name="nightly export")
    Path(f"{gate}.1").touch()
    wait_until(lambda: (c.status(running).progress or {}).get("current") == 1, what="progress")
    return str(running)


def test_every_page_renders_and_stays_on_origin(stack: Stack, page: Page, tmp_path: Path) -> None:
    running = some_activity(stack, tmp_path)
    shots = tmp_path / "img"
    shots.mkdir()
    for name, route, title in PAGES:
        pw = page.go(route if route is not None else f"/jobs/{running}")
        pw.locator("main h1", has_text=title).first.wait_for()
        pw.wait_for_function("() => !document.querySelector('main')?.textContent.includes('Loading…')")
        pw.wait_for_load_state("networkidle")
        pw.screenshot(path=str(shots / f"dashboard-{name}.png"))
    small = page.context.browser.new_context(viewport=PHONE, locale="en-US", timezone_id="UTC",
                                             device_scale_factor=2, is_mobile=True)
    phone = Page(small, stack.web.url)
    pw = phone.go("/jobs")
    pw.locator("table.jobs tbody tr").first.wait_for()
    pw.wait_for_load_state("networkidle")
    assert pw.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1   # no sideways page
    pw.screenshot(path=str(shots / "dashboard-jobs-phone.png"))
    small.close()
    assert not phone.foreign_requests() and not phone.errors
    assert len(page.requests) > 20
    assert not page.foreign_requests(), page.foreign_requests()
    (Path(f"{tmp_path / 'shot'}.2")).touch()
    (Path(f"{tmp_path / 'shot'}.3")).touch()
    if os.environ.get("JOBD_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, DOCS_IMG / png.name)


# --- jobd down: the banner; back: a resync ---------------------------------------------------------

def test_banner_when_jobd_is_down_then_resync(stack: Stack, page: Page) -> None:
    pw = page.go("/")
    pw.locator("main h1", has_text="Overview").wait_for()
    pw.locator("#live.st-live").wait_for()
    stack.daemon.stop()
    try:
        pw.locator("#banner", has_text="jobd is not running").wait_for()
    finally:
        stack.daemon.start()
    pw.locator("[data-test=resynced]").wait_for()
    pw.locator("#banner").wait_for(state="hidden")


# --- a million jobs --------------------------------------------------------------------------------

MILLION = 1_000_000
BATCH = 10_000


def fill(daemon: DaemonProc, n: int) -> float:
    """`n` pending jobs (no workers run them), tagged batch=0..99; seconds taken."""
    c = daemon.client(timeout=120)
    t0 = time.monotonic()
    for b in range(n // BATCH):
        c.submit_many([{"handler": "jobd_testhandlers.noop", "job_id": f"m{b}/{i}",
                        "tags": {"batch": str(b % 100)}} for i in range(BATCH)])
    return time.monotonic() - t0


def timed_render(pw: Any, action: Any, info: str) -> str:
    """Seconds from `action` to the rows shown, and the API call's share as the page measured it."""
    t0 = time.monotonic()
    action()
    pw.locator("[data-test=page-info]", has_text=info).first.wait_for()
    pw.locator("table.jobs tbody tr").first.wait_for()
    took = time.monotonic() - t0
    api_ms = pw.locator("[data-test=results]").get_attribute("data-load-ms")
    return f"{took * 1000:.0f} ms (API {api_ms} ms)"


def test_jobs_page_with_a_million_jobs(tmp_path: Path, browser: Any) -> None:
    daemon = DaemonProc(tmp_path, workers=0, handlers=HANDLERS).start()
    web = WebProc(tmp_path, daemon.socket)
    context = browser.new_context(viewport=VIEWPORT, locale="en-US", timezone_id="UTC")
    try:
        filled = fill(daemon, MILLION)
        web.start()
        page = Page(context, web.url)
        pw = page.pw
        first = timed_render(pw, lambda: page.go("/jobs"), "of 1,000,000 · page 1 of 20,000")
        assert pw.locator("table.jobs tbody tr").count() == 50
        assert pw.locator("table.jobs tbody tr").first.get_attribute("data-key") == "m0/0"
        nxt = timed_render(pw, lambda: pw.locator("[data-test=next]").first.click(), "51–100 of 1,000,000")
        assert pw.locator("table.jobs tbody tr").first.get_attribute("data-key") == "m0/50"
        form = pw.locator("form.filters")
        form.locator("input[name=tag]").fill("batch=7")
        press_enter = lambda: form.locator("input[name=tag]").press("Enter")  # noqa: E731
        filtered = timed_render(pw, press_enter, "of 10,000 · page 1")
        assert pw.locator("table.jobs tbody tr").first.get_attribute("data-key") == "m7/0"
        last = timed_render(pw, lambda: page.go("/jobs?tag=batch%3D7&page=200"), "9,951–10,000 of 10,000")
        assert pw.locator("table.jobs tbody tr").last.get_attribute("data-key") == "m7/9999"
        print(f"\n1,000,000 jobs submitted in {filled:.1f} s; jobs page, action to rows shown: "
              f"first page {first}, next page {nxt}, filtered tag=batch=7 (10,000) {filtered}, "
              f"its last page {last}")
        assert not page.foreign_requests() and not page.errors
    finally:
        context.close()
        web.stop()
        daemon.cleanup()
