"""The job runner: outcomes, live reports, cancelling, owners, concurrency and shutdown."""
import threading
import time

import pytest

from engine.jobs import Cancelled, JobManager

ME, OTHER = "session-a", "session-b"


@pytest.fixture
def jobs():
    manager = JobManager(max_workers=2)
    yield manager
    assert manager.shutdown(timeout=30)


def add(ctx, a, b):
    ctx.report(0.5, "adding")
    return a + b


def poll_until_cancelled(ctx):
    while True:
        ctx.check()
        time.sleep(0.01)


def test_a_job_ends_done_with_its_result(jobs):
    job_id = jobs.submit(add, owner=ME, kind="math", label="sum", a=2, b=3)
    state = jobs.wait(job_id, ME, timeout=30)
    assert (state.status, state.result, state.progress, state.done) == ("done", 5, 1.0, True)
    assert state.started is not None and state.finished >= state.started


def test_partial_reports_are_visible_while_running(jobs):
    release = threading.Event()

    reported = threading.Event()

    def train(ctx):
        ctx.report(0.25, "step 1", loss=[1.0])
        ctx.report(message="step 2", acc=0.5)
        reported.set()
        release.wait()

    job_id = jobs.submit(train, owner=ME, kind="train")
    assert reported.wait(30)
    state = jobs.get(job_id, ME)
    release.set()
    assert (state.status, state.progress, state.partial) == ("running", 0.25, {"loss": [1.0], "acc": 0.5})


def test_a_snapshot_does_not_change_after_it_is_taken(jobs):
    release = threading.Event()
    job_id = jobs.submit(lambda ctx: release.wait(), owner=ME, kind="x")
    before = jobs.get(job_id, ME)
    release.set()
    jobs.wait(job_id, ME, timeout=30)
    assert before.status == "running" and jobs.get(job_id, ME).status == "done"


def test_cancel_stops_a_polling_job(jobs):
    job_id = jobs.submit(poll_until_cancelled, owner=ME, kind="loop")
    assert jobs.cancel(job_id, ME)
    state = jobs.wait(job_id, ME, timeout=30)
    assert state.status == "cancelled"


def test_a_job_that_returns_after_a_cancel_ends_cancelled(jobs):
    def stop_on_event(ctx):
        ctx.stop_event.wait(30)
        return "partial history"

    job_id = jobs.submit(stop_on_event, owner=ME, kind="loop")
    jobs.cancel(job_id, ME)
    state = jobs.wait(job_id, ME, timeout=30)
    assert (state.status, state.result) == ("cancelled", "partial history")


def test_an_exception_ends_failed_with_its_message(jobs):
    def boom(ctx):
        raise RuntimeError("The loss became NaN at step 7.")

    state = jobs.wait(jobs.submit(boom, owner=ME, kind="train"), ME, timeout=30)
    assert (state.status, state.error) == ("failed", "The loss became NaN at step 7.")
    assert "RuntimeError" in state.detail and "boom" in state.detail


def test_an_exception_without_a_message_names_its_type(jobs):
    def boom(ctx):
        raise KeyError()

    state = jobs.wait(jobs.submit(boom, owner=ME, kind="train"), ME, timeout=30)
    assert state.error == "KeyError"


def test_raising_cancelled_ends_cancelled(jobs):
    def give_up(ctx):
        raise Cancelled()

    assert jobs.wait(jobs.submit(give_up, owner=ME, kind="x"), ME, timeout=30).status == "cancelled"


def test_owners_do_not_see_each_others_jobs(jobs):
    job_id = jobs.submit(add, owner=ME, kind="math", a=1, b=2)
    assert jobs.get(job_id, OTHER) is None and jobs.list(OTHER) == []
    assert not jobs.cancel(job_id, OTHER)
    assert jobs.wait(job_id, ME, timeout=30).status == "done"


def test_list_is_newest_first_and_filters_by_kind(jobs):
    first = jobs.submit(add, owner=ME, kind="math", a=1, b=2)
    second = jobs.submit(add, owner=ME, kind="other", a=1, b=2)
    third = jobs.submit(add, owner=ME, kind="math", a=1, b=2)
    assert [s.id for s in jobs.list(ME)] == [third, second, first]
    assert [s.id for s in jobs.list(ME, kind="math")] == [third, first]


def test_two_jobs_run_at_the_same_time(jobs):
    a_ready, b_ready = threading.Event(), threading.Event()

    def handshake(ctx, mine, theirs):
        mine.set()
        if not theirs.wait(30):
            raise TimeoutError("The other job never started.")
        return "met"

    a = jobs.submit(handshake, owner=ME, kind="x", mine=a_ready, theirs=b_ready)
    b = jobs.submit(handshake, owner=OTHER, kind="x", mine=b_ready, theirs=a_ready)
    assert jobs.wait(a, ME, timeout=30).result == "met" and jobs.wait(b, OTHER, timeout=30).result == "met"


def test_jobs_beyond_max_workers_wait_queued():
    manager = JobManager(max_workers=1)
    release = threading.Event()
    first = manager.submit(lambda ctx: release.wait(), owner=ME, kind="x")
    second = manager.submit(add, owner=ME, kind="x", a=1, b=1)
    assert manager.get(second, ME).status == "queued"
    release.set()
    assert manager.wait(second, ME, timeout=30).result == 2 and manager.get(first, ME).status == "done"
    manager.shutdown()


def test_cancelling_a_queued_job_ends_it_at_once():
    manager = JobManager(max_workers=1)
    manager.submit(poll_until_cancelled, owner=ME, kind="x")
    queued = manager.submit(add, owner=ME, kind="x", a=1, b=1)
    assert manager.cancel(queued, ME) and manager.get(queued, ME).status == "cancelled"
    assert manager.shutdown(timeout=30)


def test_forget_drops_a_finished_job(jobs):
    job_id = jobs.submit(add, owner=ME, kind="math", a=1, b=2)
    jobs.wait(job_id, ME, timeout=30)
    assert jobs.forget(job_id, ME) and jobs.get(job_id, ME) is None


def test_only_the_newest_finished_jobs_are_kept():
    manager = JobManager(max_workers=1, keep_finished=2)
    ids = [manager.submit(add, owner=ME, kind="math", a=i, b=0) for i in range(4)]
    manager.wait(ids[-1], ME, timeout=30)
    assert [s.id for s in manager.list(ME)] == [ids[3], ids[2]]
    manager.shutdown()


def test_shutdown_cancels_and_joins_the_workers():
    manager = JobManager()
    job_id = manager.submit(poll_until_cancelled, owner=ME, kind="loop")
    assert manager.shutdown(timeout=30)
    assert manager.get(job_id, ME).status == "cancelled"
    assert not [t for t in threading.enumerate() if t.name == f"dynamics-lab-job-{job_id[:8]}"]


def test_no_jobs_after_shutdown():
    manager = JobManager()
    manager.shutdown()
    with pytest.raises(RuntimeError):
        manager.submit(add, owner=ME, kind="math", a=1, b=1)
