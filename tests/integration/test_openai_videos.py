"""OpenAI's Videos API on a real gateway + real Triton (streaming variant, tiny model), driven by the official
`openai` SDK unchanged: create_and_poll with a local image file, text-to-video, download_content and its
variants, cursor pages, progress while running, delete cancelling a running job, extend and remix,
AsyncOpenAI, and the SDK's typed errors naming the parameter."""
from __future__ import annotations

import asyncio
import base64
import io
import time
import warnings

import httpx
import openai
import pytest
from PIL import Image

from tests.support import TOKEN
from tests.support.videos import decode_video, max_abs_diff

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK marks client.videos deprecated
SMALL = {"num_inference_steps": 2, "num_frames": 4}


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=TOKEN, max_retries=0)


@pytest.fixture
def photo(tmp_path, sample_png):
    path = tmp_path / "photo.png"
    path.write_bytes(sample_png)
    return path


def server_cancellations(server) -> list[str]:
    return [line for line in server.log_path.read_text().splitlines() if "cancelled by the client" in line]


def wait_for(client, video_id, condition, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        video = client.videos.retrieve(video_id)
        if condition(video):
            return video
        time.sleep(0.05)
    raise AssertionError(f"video {video_id} never reached the state asked for: {video}")


def test_create_and_poll_with_a_local_image_file_downloads_the_mp4_asked_for(client, gateway, photo, tmp_path):
    video = client.videos.create_and_poll(prompt="the square drifts", input_reference=photo, model="sora-2",
                                          seconds="4", size="128x64", extra_body={**SMALL, "num_frames": 6, "fps": 6})
    assert (video.status, video.progress, video.seconds, video.size, video.model) == \
        ("completed", 100, "4", "128x64", "sora-2"), video.error
    assert video.prompt == "the square drifts" and video.completed_at >= video.created_at > time.time() - 600
    assert video.expires_at > video.completed_at
    target = tmp_path / "clip.mp4"
    client.videos.download_content(video.id).write_to_file(target)
    decoded = decode_video(target.read_bytes(), "mp4")
    assert (decoded.num_frames, decoded.size) == (6, (128, 64)) and decoded.fps == pytest.approx(6, abs=0.5)

    thumbnail = Image.open(io.BytesIO(client.videos.download_content(video.id, variant="thumbnail").content))
    sheet = Image.open(io.BytesIO(client.videos.download_content(video.id, variant="spritesheet").content))
    assert (thumbnail.format, thumbnail.size) == ("JPEG", (128, 64))
    assert (sheet.format, sheet.size) == ("JPEG", (3 * 128, 2 * 64))  # 6 frames in a 3-column grid

    part = httpx.get(f"{gateway.url}/v1/videos/{video.id}/content", headers={"Authorization": f"Bearer {TOKEN}",
                                                                             "Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == target.read_bytes()[:100]


def test_a_prompt_alone_makes_a_text_to_video(client, tmp_path):
    video = client.videos.create_and_poll(prompt="a red kite over a green hill", size="64x64", extra_body=SMALL)
    assert video.status == "completed", video.error
    decoded = decode_video(client.videos.download_content(video.id).content, "mp4")
    assert (decoded.num_frames, decoded.size) == (4, (64, 64))


def test_list_pages_with_the_after_cursor(client, photo):
    created = {client.videos.create(prompt=f"take {n}", input_reference=photo, size="64x64", extra_body=SMALL).id
               for n in range(3)}
    first = client.videos.list(limit=2)
    assert len(first.data) == 2 and first.has_more and first.last_id == first.data[-1].id
    second = first.get_next_page()
    assert second.data and not {v.id for v in second.data} & {v.id for v in first.data}
    listed = [video.id for video in client.videos.list(limit=2, order="asc")]  # auto-paging across every page
    assert created <= set(listed) and len(listed) == len(set(listed))
    newest_first = [video.created_at for video in client.videos.list(limit=100)]
    assert newest_first == sorted(newest_first, reverse=True)


def test_retrieve_shows_in_progress_with_rising_progress(client, photo):
    video = client.videos.create(prompt="slow", input_reference=photo, size="64x64",
                                 extra_body={"num_frames": 4, "num_inference_steps": 40})
    assert video.status in ("queued", "in_progress")
    seen = []
    while video.status in ("queued", "in_progress"):
        video = client.videos.retrieve(video.id)
        seen.append((video.status, video.progress))
        time.sleep(0.05)
    assert video.status == "completed", video.error
    running = [progress for status, progress in seen if status == "in_progress"]
    assert any(0 < progress < 100 for progress in running), seen
    assert running == sorted(running) and seen[-1] == ("completed", 100)


def test_delete_of_a_running_video_cancels_it(client, triton_stream, photo):
    before = len(server_cancellations(triton_stream))
    video = client.videos.create(prompt="long", input_reference=photo, size="64x64",
                                 extra_body={"num_frames": 4, "num_inference_steps": 100})
    wait_for(client, video.id, lambda v: v.progress > 0)
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (video.id, True, "video.deleted")
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    deadline = time.monotonic() + 60
    while len(server_cancellations(triton_stream)) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    [line] = server_cancellations(triton_stream)[before:]
    assert int(line.split("after step ")[1].split(" of")[0]) < 50, line


def test_extend_continues_the_video_from_its_last_frame_and_remix_makes_another_take(client, photo, tmp_path):
    lossless = {**SMALL, "video_quality": 0}  # x264 CRF 0: equal frames decode equal
    original = client.videos.create_and_poll(prompt="a square", input_reference=photo, size="64x64",
                                             seconds="4", extra_body=lossless)
    downloaded = tmp_path / "original.mp4"
    client.videos.download_content(original.id).write_to_file(downloaded)
    # The SDK's multipart encoding takes `video` as a file only: the gateway finds its video by the bytes.
    extended = client.videos.extend(video=downloaded, prompt="and on", seconds="4")
    assert extended.id != original.id and extended.seconds == "8"
    extended = client.videos.poll(extended.id)
    assert extended.status == "completed", extended.error
    before = decode_video(downloaded.read_bytes(), "mp4").frames
    after = decode_video(client.videos.download_content(extended.id).content, "mp4").frames
    assert len(after) == len(before) + SMALL["num_frames"] - 1  # the second clip starts from the last frame
    assert max_abs_diff(after[: len(before)], before) <= 1

    remix = client.videos.remix(original.id, prompt="another take")
    assert remix.remixed_from_video_id == original.id and remix.prompt == "another take"
    remix = client.videos.poll(remix.id)
    again = decode_video(client.videos.download_content(remix.id).content, "mp4").frames
    assert remix.status == "completed" and again.shape == before.shape and max_abs_diff(again, before) > 0


def test_async_client_creates_polls_and_downloads(gateway, photo):
    async def run():
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=TOKEN, max_retries=0)
        video = await client.videos.create_and_poll(prompt="async", input_reference=photo, size="64x64",
                                                    extra_body=SMALL)
        content = await client.videos.download_content(video.id)
        await client.close()
        return video, content.content

    video, content = asyncio.run(run())
    assert video.status == "completed" and decode_video(content, "mp4").num_frames == 4


@pytest.mark.parametrize(("field", "value"), [("size", "99999x1"), ("size", "65x64"), ("size", "big"),
                                              ("seconds", "7"), ("seconds", "-4"), ("seconds", "400")])
def test_bad_size_or_seconds_is_a_bad_request_naming_the_param(client, photo, field, value):
    with pytest.raises(openai.BadRequestError) as raised:
        client.videos.create(prompt="x", input_reference=photo, **{field: value})
    assert raised.value.param == field and "accepted" in raised.value.message
    assert "/" not in raised.value.message.split("accepted")[0].replace("/v1", "")  # no paths, no traceback


def test_unknown_extra_fields_and_ids_are_the_sdks_typed_errors(client, photo):
    with pytest.raises(openai.BadRequestError) as raised:
        client.videos.create(prompt="x", input_reference=photo, extra_body={"frobnicate": 1})
    assert "frobnicate" in raised.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.videos.retrieve("nosuchvideo")
    assert missing.value.param == "video_id"


def test_a_wrong_key_is_an_authentication_error(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        client.videos.list()
    assert raised.value.code == "invalid_api_key"


def test_json_clients_send_a_data_uri_and_extend_by_id(client, gateway, sample_png):
    """Proxies and plain-HTTP clients post JSON: input_reference {"image_url": data URI}, extend {"video": {"id"}}."""
    data_uri = "data:image/png;base64," + base64.b64encode(sample_png).decode()
    created = httpx.post(f"{gateway.url}/v1/videos", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
                         json={"prompt": "json", "input_reference": {"image_url": data_uri}, "size": "64x64", **SMALL})
    assert created.status_code == 200 and created.json()["object"] == "video", created.text
    original = client.videos.poll(created.json()["id"])
    extended = httpx.post(f"{gateway.url}/v1/videos/extensions", headers={"Authorization": f"Bearer {TOKEN}"},
                          json={"prompt": "on", "seconds": 4, "video": {"id": original.id}}, timeout=30)
    assert extended.status_code == 200 and extended.json()["seconds"] == "8", extended.text
    extended = client.videos.poll(extended.json()["id"])
    assert decode_video(client.videos.download_content(extended.id).content, "mp4").num_frames == 7
