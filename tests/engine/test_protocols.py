"""The Protocols of engine.protocols: the lab's own store and job contexts satisfy them."""
import inspect

import pytest

from engine import protocols
from engine.__main__ import PrintingContext
from engine.jobs import JobContext
from engine.store import RunStore

STORE_PROTOCOLS = [protocols.RunReader, protocols.AnalysisStore, protocols.RunWriter]


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.mark.parametrize("protocol", STORE_PROTOCOLS, ids=lambda p: p.__name__)
def test_the_run_store_is_each_store_protocol(store, protocol):
    assert isinstance(store, protocol)


@pytest.mark.parametrize("protocol", STORE_PROTOCOLS, ids=lambda p: p.__name__)
def test_the_run_stores_methods_take_the_protocols_arguments(store, protocol):
    for name, declared in inspect.getmembers(protocol, inspect.isfunction):
        if name.startswith("_"):
            continue
        parameters = list(inspect.signature(declared).parameters)[1:]  # without self
        actual = inspect.signature(getattr(store, name)).parameters
        assert all(p in actual for p in parameters), f"RunStore.{name} lacks some of {parameters}"


def test_the_jobs_context_is_a_job_context():
    assert isinstance(JobContext("job", lambda progress, message, partial: None), protocols.JobContext)


def test_the_command_lines_printing_context_is_a_job_context():
    assert isinstance(PrintingContext("train", quiet=True), protocols.JobContext)


def test_an_object_that_cannot_be_cancelled_is_not_a_job_context():
    class ReportsOnly:
        def report(self, progress=None, message=None, **partial):
            pass

    assert not isinstance(ReportsOnly(), protocols.JobContext)


def test_a_reader_is_not_a_writer():
    class Reader:
        settings = checkpoint_steps = load_checkpoint = load_artifact = list = staticmethod(lambda *a: None)

    assert isinstance(Reader(), protocols.RunReader)
    assert not isinstance(Reader(), protocols.RunWriter)
