"""The web UI under load: concurrent gradio_client clients against an in-process server with a small queue.

The device is held while the clients join, so no generation can finish before all of them have
asked: the counts below do not depend on how fast this machine is.
"""

import threading

import pytest
from conftest import free_port

from genaccel.io.video import read_video

PROMPT = "a red circle moving left on a black background"
CLIENTS = 8
QUEUE = 4  # generations that may wait for the device, the running one aside
FRAMES = 9
WAIT_S = 120  # generous bounds on waits for other threads (the machine is shared): a hang fails, never a slow run


def _settings(**overrides):
    values = dict(
        model="tiny-wan",
        setting="default",
        width=32,
        height=32,
        frames=FRAMES,
        steps=2,
        guidance=5.0,
        seed=0,
        spec="none",
        offload="none",
        tiling=False,
    )
    values.update(overrides)
    return list(values.values())


def _path(video) -> str:
    return video["video"] if isinstance(video, dict) else video


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from genaccel.ui.app import launch

    app = launch(
        port=free_port(),
        model="tiny-wan",
        device="cpu",
        output_dir=str(tmp_path_factory.mktemp("ui-load")),
        block=False,
        queue_size=QUEUE,
    )
    yield app
    app.close()


def _client(server):
    from gradio_client import Client

    return Client(server.local_url, verbose=False)


def _ranks(job) -> list[int]:
    """The queue positions the server sent this job (every status update stays in its communicator)."""
    from gradio_client.utils import StatusUpdate

    updates, ranks = job.communicator.updates, []
    while not updates.empty():
        update = updates.get_nowait()
        if isinstance(update, StatusUpdate) and update.rank is not None:
            ranks.append(update.rank)
    return ranks


def test_concurrent_clients_get_a_video_or_a_clear_queue_full_message(server):
    from gradio_client.utils import QueueError

    clients = [_client(server) for _ in range(CLIENTS)]  # one session each, as separate visitors
    results, jobs = [None] * CLIENTS, [None] * CLIENTS
    ended = threading.Semaphore(0)  # released by each client that ends without a video
    start = threading.Barrier(CLIENTS)

    def visit(i):
        start.wait(WAIT_S)
        jobs[i] = clients[i].submit(PROMPT, "", *_settings(seed=i), api_name="/generate")
        try:
            results[i] = ("video", jobs[i].result(timeout=WAIT_S))
        except Exception as exc:  # noqa: BLE001 - sorted below
            results[i] = ("refused", exc)
            ended.release()

    studio = server.studio
    threads = [threading.Thread(target=visit, args=(i,), daemon=True) for i in range(CLIENTS)]
    with studio.jobs.hold(studio.device):
        for t in threads:
            t.start()
        # Nothing finishes while the device is held: one job at most is running (waiting for the device)
        # and QUEUE wait, so at least the rest are turned away, now.
        for _ in range(CLIENTS - 1 - QUEUE):
            assert ended.acquire(timeout=WAIT_S), f"fewer than {CLIENTS - 1 - QUEUE} clients were turned away"
        assert not any(r and r[0] == "video" for r in results)
    for t in threads:
        t.join(WAIT_S)
    assert not any(t.is_alive() for t in threads)

    videos = [value for kind, value in results if kind == "video"]
    refused = [value for kind, value in results if kind == "refused"]
    for exc in refused:  # gradio_client's words for the server's 503 "Queue is full. Max size is 4 ..."
        assert isinstance(exc, QueueError) and "Queue is full" in str(exc), repr(exc)
    assert len(videos) + len(refused) == CLIENTS and len(videos) >= QUEUE and len(refused) >= CLIENTS - 1 - QUEUE
    for video, _, figures, _ in videos:
        assert read_video(_path(video)).shape[0] == FRAMES == figures["num_frames"]
    # Clients that waited were told their place: the last of QUEUE waiting is at position QUEUE - 1.
    ranks = [rank for job, (kind, _) in zip(jobs, results) if kind == "video" for rank in _ranks(job)]
    assert max(ranks) == QUEUE - 1

    # The server still answers, and its queue is free again.
    video, _, figures, _ = _client(server).predict(PROMPT, "", *_settings(), api_name="/generate")
    assert read_video(_path(video)).shape[0] == FRAMES


def test_a_failing_or_oversized_request_does_not_affect_the_others(server, monkeypatch):
    """A job that fails while it runs, an oversized request and a model not offered each end at once with
    their own message; the device is free again and the others' videos come."""
    import importlib

    module = importlib.import_module("genaccel.generation.generate")  # the package's `generate` is the function
    real = module.generate

    def failing(pipe, prepared, **kwargs):
        if prepared.request.seed == 666:
            raise RuntimeError("the device fell over")
        return real(pipe, prepared, **kwargs)

    monkeypatch.setattr(module, "generate", failing)
    bad, good, after = _client(server), _client(server), _client(server)
    studio = server.studio
    with studio.jobs.hold(studio.device):  # all of them wait in the queue, the failing one first
        crash = bad.submit(PROMPT, "", *_settings(seed=666), api_name="/generate")
        first = good.submit(PROMPT, "", *_settings(seed=1), api_name="/generate")
        oversized = bad.submit(PROMPT, "", *_settings(width=4096), api_name="/generate")
        unknown = bad.submit(PROMPT, "", *_settings(model="/etc"), api_name="/generate")
    with pytest.raises(Exception):
        crash.result(timeout=WAIT_S)
    with pytest.raises(Exception, match=r"Width 4096 is above this server's limit of 1280 \(--max-size\)"):
        oversized.result(timeout=WAIT_S)
    with pytest.raises(Exception, match="model '/etc' is not offered on this server"):
        unknown.result(timeout=WAIT_S)
    assert first.result(timeout=WAIT_S)[2]["num_frames"] == FRAMES
    assert after.predict(PROMPT, "", *_settings(seed=2), api_name="/generate")[2]["num_frames"] == FRAMES
    assert not studio.jobs.busy(studio.device)
