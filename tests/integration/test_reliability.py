"""A short load run against the real server: every request answered once, correctly or clearly."""
from benchmarks.reliability import run_load
from tests.support import TOKEN


def test_short_load_every_request_gets_its_video_or_a_clear_error(triton):
    report = run_load(triton, requests=64, concurrency=16, token=TOKEN)
    assert report.wrong == []
    assert report.videos == 64 and not report.errors, report.errors  # queue-full answers were retried
    assert report.queue_refusals > 0  # concurrency 16 does overflow the queue of 8 behind a batch of 4
    assert report.rss_after - report.rss_before < 500  # MiB: no runaway growth across the run
