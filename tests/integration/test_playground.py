"""The playground page (GET /) in a real headless Chromium against a real gateway + real Triton (tiny model,
streaming variant): upload, generate with progress, play and decode the video, errors next to their
controls (as text: markup from the server never runs), a wrong token, cancel, CSP, labels, phone width."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.browsers import fill_parameters, launch_chromium, open_playground
from tests.support import TOKEN
from svd_contract import PARAMETERS
from tests.support.videos import decode_video

SMALL = {"width": 64, "height": 64, "num_frames": 4}
MARKUP = "<img src=x onerror=\"document.title='pwned'\">"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def photo(tmp_path, sample_png):
    path = tmp_path / "photo.png"
    path.write_bytes(sample_png)
    return path


@pytest.fixture
def page(browser, gateway):
    page = open_playground(browser, gateway.url, TOKEN)
    page.script_errors = []
    page.on("pageerror", lambda error: page.script_errors.append(str(error)))
    yield page
    page.context.close()


def wait_until(page, expression: str, timeout: float = 30) -> None:
    """Poll `expression` from the test (Playwright's wait_for_function evals a string, which the page's CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def error_of(page, control: str) -> str:
    return page.locator(f"#{control}-error").inner_text()


def test_the_page_and_parameters_are_public_the_api_is_not(gateway):
    page = httpx.get(gateway.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
    assert "<script>" not in page.text and "http" not in page.text.split("<body>")[1]  # no inline script, no CDN
    assert httpx.get(gateway.url + "/playground/playground.js").status_code == 200
    assert httpx.get(gateway.url + "/playground/nothing.js").status_code == 404
    assert httpx.get(gateway.url + "/v1/predictions").status_code == 401
    described = {p["name"]: p for p in httpx.get(gateway.url + "/v1/parameters").json()["parameters"]}
    assert list(described) == list(PARAMETERS) and all(p["help"] for p in described.values())
    # cpu_stream.pbtxt: default_width 128, max_num_frames 16; the contract: motion_bucket_id 127, 0–255
    assert described["width"]["default"] == 128 and described["num_frames"]["high"] == 16
    assert (described["motion_bucket_id"]["default"], described["motion_bucket_id"]["high"]) == (127, 255)
    assert described["seed"]["datatype"] == "INT64" and described["video_format"]["choices"][0] == "mp4"


def test_generate_from_a_photo_shows_progress_and_plays_the_video(page, gateway, photo):
    page.set_input_files("#image", str(photo))
    page.wait_for_selector("#preview:not([hidden])")
    # enough steps that the 0.5 s progress flushes land mid-denoising on the tiny model, even on an idle CPU
    # (about 20 ms a step there)
    fill_parameters(page, **SMALL, num_inference_steps=80, fps=8, seed=7)
    assert page.get_attribute("#param-num_inference_steps", "max") == "100"  # ranges come from the server
    page.click("#generate")
    seen, deadline = [], time.monotonic() + 90
    while page.locator("#result").is_hidden() and time.monotonic() < deadline:
        seen.append(page.locator("#progress").evaluate("bar => bar.value"))
        assert not error_of(page, "form"), error_of(page, "form")
        time.sleep(0.05)
    assert page.locator("#result").is_visible(), page.locator("#progress-text").inner_text()
    partial = sorted({value for value in seen if 0 < value < 100})
    assert partial, f"the progress bar never showed a step in between: {sorted(set(seen))}"
    wait_until(page, "document.getElementById('video').duration > 0", 15)
    assert page.locator("#video").evaluate("video => video.loop && video.readyState >= 1")
    assert page.locator("#seed-used").inner_text() == "7"
    phases = page.locator("#timings tbody td:first-child").all_inner_texts()
    assert "denoising" in phases and "encoding" in phases
    video = decode_video(httpx.get(gateway.url + page.get_attribute("#download", "href")).content, "mp4")
    assert (video.num_frames, video.size) == (4, (64, 64)) and video.fps == pytest.approx(8, abs=0.5)
    assert "succeeded" in page.locator("#recent").inner_text()
    with page.expect_download(timeout=60_000) as download:  # the same request and seed, as WebM
        page.click("#formats button:has-text('webm')")
    assert download.value.suggested_filename.endswith(".webm")
    webm = decode_video(download.value.path().read_bytes(), "webm")
    assert (webm.num_frames, webm.size) == (4, (64, 64))
    page.click("#snippets summary")
    assert '"num_frames": 4' in page.locator("#snippet").inner_text()
    page.click("[data-snippet=replicate]")
    assert 'client.run("stability-ai/stable-video-diffusion"' in page.locator("#snippet").inner_text()
    page.fill("#param-seed", str(2**63 - 1))  # beyond 2^53: written as exact JSON digits, not a rounded number
    page.click("[data-snippet=curl]")
    assert f'"seed": {2**63 - 1}\n' in page.locator("#snippet").inner_text()
    page.click("#param-seed ~ button:has-text('Random')")
    assert page.input_value("#param-seed") == ""
    page.click("#reuse-seed")
    assert page.input_value("#param-seed") == "7"
    assert not page.script_errors


def test_errors_are_shown_next_to_the_control_they_name(page, photo):
    page.set_input_files("#image", str(photo))
    fill_parameters(page, **{**SMALL, "width": 32}, num_inference_steps=2)  # refused by the gateway's schema: 422
    page.click("#generate")
    wait_until(page, "document.getElementById('param-width-error').textContent !== ''")
    assert "greater than or equal to 64" in error_of(page, "param-width")
    assert page.get_attribute("#param-width", "aria-invalid") == "true"
    fill_parameters(page, width=64, decode_chunk_size=8)  # accepted by the gateway, refused by the model: a failed job
    page.click("#generate")
    wait_until(page, "document.getElementById('param-decode_chunk_size-error').textContent !== ''", 60)
    assert "decode_chunk_size=8 is out of range" in error_of(page, "param-decode_chunk_size")
    assert error_of(page, "param-width") == "" and page.locator("#progress-text").inner_text() == "Failed."
    assert not page.script_errors


def test_markup_sent_or_echoed_stays_text_and_runs_nothing(page):
    page.click("#use-sample")  # the page's own offer: the sample image shipped with the client
    page.wait_for_selector("#preview:not([hidden])")
    fill_parameters(page, **SMALL, num_inference_steps=2)
    page.locator("#param-video_format").evaluate("(select, value) => { select.add(new Option(value, value)); "
                                                 "select.value = value; }", MARKUP)
    page.click("#generate")
    wait_until(page, "document.getElementById('param-video_format-error').textContent !== ''")
    assert "video_format" in error_of(page, "param-video_format")
    # Server messages echo what was sent (the gateway names unknown fields, the model quotes bad values): a reply
    # that echoes markup, taken through the page's own request and error path, must stay text.
    page.evaluate("markup => api('POST', '/v1/predictions', {input: {[markup]: 1}})"
                  ".catch(error => showError(error.message, error.field, error.status))", MARKUP)
    wait_until(page, "document.getElementById('form-error').textContent !== ''")
    assert error_of(page, "form") == f"unknown field: input.{MARKUP}"
    page.wait_for_timeout(300)  # time for a broken image's onerror, were it an element
    assert page.locator(".error *").count() == 0 and page.locator("img[src=x]").count() == 0
    assert page.title() == "SVD playground" and not page.script_errors


def test_the_prompt_box_sends_a_prompt(page, photo):
    """Text-to-video's input: the page sends `prompt`, and shows whatever the server answers about it."""
    page.set_input_files("#image", str(photo))
    fill_parameters(page, **SMALL, num_inference_steps=2)
    page.fill("#prompt", "a red fox in the snow")
    with page.expect_request(lambda request: request.url.endswith("/v1/predictions") and request.method == "POST") as sent:
        page.click("#generate")
    assert sent.value.post_data_json["input"]["prompt"] == "a red fox in the snow"
    wait_until(page, "document.getElementById('result').hidden === false || "
                     "[...document.querySelectorAll('.error')].some(e => e.textContent)", 60)
    assert not page.script_errors


def snippet(page, language: str) -> str:
    page.click(f"[data-snippet={language}]")
    return page.locator("#snippet").inner_text()


def test_copy_as_snippets_run_as_shown(page, gateway, photo):
    fill_parameters(page, **SMALL, num_inference_steps=2, fps=5, seed=11)
    page.click("#snippets summary")
    environment = {"SVD_TRITON_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    curl = subprocess.run(["bash", "-c", snippet(page, "curl")], cwd=photo.parent, env=environment, capture_output=True,
                          text=True, timeout=90)
    prediction = json.loads(curl.stdout)
    assert prediction["status"] == "succeeded", curl.stdout + curl.stderr
    assert decode_video(httpx.get(prediction["output"]).content, "mp4").num_frames == 4
    replicate = subprocess.run([sys.executable, "-c", snippet(page, "replicate")], cwd=photo.parent, capture_output=True,
                               text=True, timeout=90, env={**os.environ, **environment})
    assert replicate.returncode == 0, replicate.stderr
    assert decode_video(httpx.get(replicate.stdout.strip()).content, "mp4").num_frames == 4
    python_openai = subprocess.run([sys.executable, "-c", snippet(page, "openai")], cwd=photo.parent,
                                   capture_output=True, text=True, timeout=90, env={**os.environ, **environment})
    assert python_openai.returncode == 0 and python_openai.stdout.startswith("completed"), python_openai.stderr
    clip = decode_video((photo.parent / "video.mp4").read_bytes(), "mp4")
    assert (clip.num_frames, clip.size) == (4, (64, 64)) and clip.fps == pytest.approx(5, abs=0.5)
    (photo.parent / "video.mp4").unlink()
    stability = subprocess.run(["bash", "-c", snippet(page, "stability")], cwd=photo.parent, env=environment,
                               capture_output=True, text=True, timeout=90)
    assert stability.returncode == 0, stability.stderr
    clip = decode_video((photo.parent / "video.mp4").read_bytes(), "mp4")
    assert (clip.num_frames, clip.size) == (4, (64, 64)) and clip.fps == pytest.approx(5, abs=0.5)
    compile(snippet(page, "tritonclient"), "tritonclient snippet", "exec")
    forge_route, forge_body = snippet(page, "json").split("\n\n")[1].split("\n", 1)
    body = json.loads(forge_body) | {"image": "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode()}
    forge = httpx.post(forge_route.split("POST ")[1], json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=90)
    assert forge.status_code == 200 and forge.json()["seed"] == 11, forge.text


def test_a_wrong_token_gets_a_clear_message_at_the_token_field(browser, gateway, photo):
    page = open_playground(browser, gateway.url, "not-the-token")
    try:
        page.set_input_files("#image", str(photo))
        page.click("#generate")
        wait_until(page, "document.getElementById('token-error').textContent !== ''")
        assert "refused the token" in error_of(page, "token")
        assert "token was refused" in page.locator("#runtime").inner_text()
        assert "not-the-token" not in page.url  # kept in session storage, never in the URL
    finally:
        page.context.close()


def test_cancel_stops_the_job_on_the_server(page, gateway, photo):
    page.set_input_files("#image", str(photo))
    fill_parameters(page, **SMALL, num_inference_steps=100)
    page.click("#generate")
    wait_until(page, "document.getElementById('progress-text').textContent.includes('denoising')", 60)
    page.click("#cancel")
    wait_until(page, "document.getElementById('progress-text').textContent === 'Canceled.'", 30)
    [job_id] = page.locator("#recent li").first.inner_text().split(" · ")[:1]
    job = httpx.get(f"{gateway.url}/v1/predictions/{job_id}", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert job["status"] == "canceled" and "100/100" not in job["logs"] and job["output"] is None


def test_every_control_has_a_label_and_the_page_fits_a_phone(browser, gateway):
    page = open_playground(browser, gateway.url, TOKEN, viewport={"width": 390, "height": 844})
    try:
        unlabeled = page.evaluate("[...document.querySelectorAll('input, select, textarea')]"
                                  ".filter(c => c.labels.length === 0).map(c => c.id)")
        assert unlabeled == []
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.focus("#token")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "image"  # keyboard order follows the form
    finally:
        page.context.close()
