"""The page in a real headless Chromium (Debian's) against a real server: the plotted points are
the API's front and baselines, a click shows a trial, and the table narrows as the API does. (The
README's screenshot is of the demo's front: scripts/screenshot_demo.py.)"""

import shutil
import socket
import threading
import time

import httpx
import pytest
import uvicorn
import yaml

from recycler.records import entry_key
from recycler.service import ServiceConfig, create_app
from tests.service_auth import AUTH, TOKEN
from tests.suites import add_generation_task

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")


@pytest.fixture
def server(tmp_path, local_ray):
    """`recycler serve`'s app under uvicorn on 127.0.0.1 and a free port, stopped at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(ServiceConfig(data=tmp_path / "data", roots=[tmp_path / "pool"], token=TOKEN))
    app.state.runner.poll_seconds = 0.2
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(120)


def test_page_plots_the_api_front(server, tmp_path, pool_spec):
    from playwright.sync_api import sync_playwright

    spec = pool_spec(trials=10)
    suite = tmp_path / "pool" / "suite"  # a held-out generation task, so a clicked trial shows example answers
    add_generation_task(suite / "tasks")
    config = yaml.safe_load((suite / "suite.yaml").read_text())
    config["held_out"].append({"task": "answer", "metric": "exact_match,word"})
    (suite / "suite.yaml").write_text(yaml.safe_dump(config))
    study = httpx.post(f"{server}/api/studies", json={"spec": spec, "root": str(tmp_path / "pool")}, headers=AUTH).json()
    deadline = time.monotonic() + 90
    while httpx.get(f"{server}/api/studies/{study['id']}", headers=AUTH).json()["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    trials = httpx.get(f"{server}/api/studies/{study['id']}/trials", headers=AUTH).json()
    front = httpx.get(f"{server}/api/studies/{study['id']}/front", headers=AUTH).json()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1250, "height": 1000})
            page.goto(f"{server}/#token={TOKEN}")
            page.wait_for_selector("#studies tbody tr a")
            assert "#token" not in page.url
            page.click("#studies tbody tr a")
            page.wait_for_selector("body[data-state=done] #front-table tr:nth-child(2)")
            traces = page.evaluate("""() => document.getElementById('front-plot').data.map(t => (
                {name: t.name, points: t.x.map((x, i) => [t.customdata[i], x, t.y[i]])}))""")
            plotted = {name: sorted(map(tuple, t["points"]), key=str) for t in traces for name in [t["name"]]}
            sums, pick = front["objectives"]
            expected = {
                "Pareto front": sorted(((entry_key(r), r["scores"][sums], r["scores"][pick]) for r in front["trials"] if r["on_front"] and not r["baseline"]), key=str),
                "baselines": sorted(((entry_key(r), r["scores"][sums], r["scores"][pick]) for r in front["trials"] if r["baseline"]), key=str),
            }
            assert {k: v for k, v in plotted.items() if k != "dominated merges"} == expected
            assert sum(map(len, plotted.values())) == len(trials["trials"])
            axes = page.evaluate("""() => document.getElementById('tradeoff-plot').data[0].dimensions.map(
                d => [d.label, d.values.length])""")
            tasks = front["objectives"] + [f"{t} (held-out)" for t in front["held_out"]]
            assert axes == [[task, len(front["trials"])] for task in tasks]  # one line per front member and baseline

            member = next(r for r in front["trials"] if r["on_front"])
            x, y = page.evaluate("""([x, y]) => { const gd = document.getElementById('front-plot'), l = gd._fullLayout;
                const box = gd.getBoundingClientRect();
                return [box.left + l.xaxis._offset + l.xaxis.d2p(x), box.top + l.yaxis._offset + l.yaxis.d2p(y)]; }""",
                                 [member["scores"][sums], member["scores"][pick]])
            page.mouse.click(x, y)
            page.wait_for_selector("#detail-table")
            detail = page.inner_text("#detail")
            assert "held-out" in detail and "w:c0" in detail
            clicked = page.evaluate("() => document.querySelector('#detail h3').textContent")
            page.wait_for_selector("#detail-examples table")
            shown = httpx.get(f"{server}/api/studies/{study['id']}/examples", headers=AUTH,
                              params={"trial": clicked.split()[1]} if clicked.startswith("Trial") else {"baseline": clicked.split()[1]}).json()
            rows = page.evaluate("""() => [...document.querySelectorAll('#detail-examples tr')].slice(1).map(
                r => [...r.children].map(c => c.textContent))""")
            answers = shown["tasks"]["answer"]
            assert page.inner_text("#detail-examples h4").startswith(f"answer: {answers['differ']} of 20 answers differ from {shown['beside']}")
            assert [row[:4] for row in rows] == [[str(x["index"]), x["prompt"], x["target"], f"{x['answer']} ({x['score']:.3f})"] for x in answers["examples"]]
            assert [row[4] for row in rows] == [f"{x['beside_answer']} ({x['beside_score']:.3f})" for x in answers["examples"]]

            members = sorted(r["scores"][pick] for r in front["trials"] if r["on_front"])
            bar = members[len(members) // 2]
            narrowed = httpx.get(f"{server}/api/studies/{study['id']}/front", headers=AUTH,
                                 params={"where": f"{pick}>={bar}", "rank": f"{sums}=1", "limit": 1}).json()
            page.fill("#where", f"{pick}>={bar}")
            page.fill("#rank", f"{sums}=1")
            page.fill("#limit", "1")
            page.click("#narrow-button")
            page.wait_for_function("n => document.querySelectorAll('#front-table tr').length === n",
                                   arg=1 + len(narrowed["trials"]))
            first = page.inner_text("#front-table tr:nth-child(2) td:first-child")
            assert first == str(narrowed["trials"][0]["trial"]) and narrowed["trials"][0]["on_front"]
            page.fill("#where", "nosuchtask>=1")
            page.click("#narrow-button")
            page.wait_for_function("() => document.getElementById('error').textContent.includes('nosuchtask')")
        finally:
            browser.close()
