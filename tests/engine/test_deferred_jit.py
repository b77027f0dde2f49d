"""A DeferredDispatcher compiles its declared signatures on first use and then behaves as
numba's eager dispatcher for the same signatures (the reference in each test)."""
import pickle
import threading

import numba
import numpy as np
import pytest

from engine.deferred_jit import DeferredDispatcher


def plus_one(x):
    return x + 1


def deferred(function, signatures):
    return DeferredDispatcher(py_func=function, locals={}, targetoptions={"nopython": True}).defer(signatures)


def test_nothing_compiles_until_the_first_call():
    function = deferred(plus_one, ["i8(i8)"])
    assert function.signatures == []
    assert function(41) == 42 and function.signatures == [(numba.int64,)]


def test_a_python_call_converts_or_refuses_arguments_as_the_eager_dispatcher_does():
    function, eager = deferred(plus_one, ["i8(i8)"]), numba.njit("i8(i8)")(plus_one)
    assert function(2.7) == eager(2.7) == 3  # 2.7 becomes the int64 2
    with pytest.raises(TypeError):
        function("a")
    with pytest.raises(TypeError):
        eager("a")
    assert function.signatures == eager.signatures


def test_a_call_from_jitted_code_uses_the_declared_signature():
    function, eager = deferred(plus_one, ["f4(f4)"]), numba.njit("f4(f4)")(plus_one)

    @numba.njit
    def call(f, x):
        return f(x)

    x = 0.1  # a float64 argument rounds to float32 on the way in, as with the eager one
    assert call(function, x) == call(eager, x) == np.float32(np.float32(x) + 1)
    assert function.signatures == [(numba.float32,)]


def test_a_global_function_called_from_jitted_code_compiles_first():
    function = deferred(plus_one, ["f8(f8)"])

    @numba.njit
    def twice_plus_one(x):
        return function(x) * 2

    assert twice_plus_one(3.0) == 8.0 and function.signatures == [(numba.float64,)]


def test_threads_using_it_first_at_once_all_get_results():
    function = deferred(plus_one, ["i8(i8)"])
    start, results = threading.Barrier(4), []

    def use():
        start.wait()
        results.append(function(1))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [2, 2, 2, 2]


def test_pickling_compiles_the_signatures_first():
    function = deferred(plus_one, ["i8(i8)"])
    assert pickle.loads(pickle.dumps(function))(1) == 2 and function.signatures == [(numba.int64,)]
