"""numba functions whose declared signatures compile on first use instead of at import.

`numba.njit("f4(f4[::1])")` compiles (or loads from numba's disk cache) inside the decorator,
so importing a library pays for every such function it defines, used or not: pynndescent
defines about fifty, which umap imports but never calls when it is given the neighbours.
A `DeferredDispatcher` holds its signatures back until numba first needs the function (a
call from Python, a call typed inside another jitted function, its numba type, an explicit
`compile`, pickling) and then compiles exactly them and closes itself to other types, as
the eager decorator would have done: from then on it is indistinguishable from it.

Imported by `engine.geometry.import_umap` only, since it imports numba.
"""
from __future__ import annotations

from numba.core import typeinfer
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import CPUDispatcher

__all__ = ["DeferredDispatcher"]


class DeferredDispatcher(CPUDispatcher):
    """A CPU dispatcher made like numba's eager one for `signatures`, compiled when first used.

    Args (of `defer`):
        signatures: the signatures the decorator was given, compiled in that order.
    """

    _pending_signatures: tuple | None = None

    def defer(self, signatures) -> DeferredDispatcher:
        self._pending_signatures = tuple(signatures)
        return self

    def compile_pending(self) -> None:
        """Compile the held-back signatures and disable further compiling (numba's eager
        behaviour); does nothing once done. Under numba's compiler lock, so another thread
        waits for the first to finish; a recursive function types itself while compiling, as
        under the eager decorator. If compiling fails, the next use tries again (and fails
        the same way), as importing would have."""
        if self._pending_signatures is None and not self._can_compile:
            return
        with global_compiler_lock:
            signatures, self._pending_signatures = self._pending_signatures, None
            if signatures is None:
                return  # done by another thread, or this one is compiling them
            try:
                with typeinfer.register_dispatcher(self):
                    for signature in signatures:
                        self.compile(signature)
            except BaseException:
                self._pending_signatures = signatures
                raise
            self.disable_compile()

    # Every way numba reaches a dispatcher's machine code or type goes through one of these.

    def _compile_for_args(self, *args, **kws):
        """A Python call that matched no compiled signature: compile the pending ones, then
        dispatch again (converting the arguments, or raising numba's TypeError)."""
        self.compile_pending()
        if self._can_compile:
            return super()._compile_for_args(*args, **kws)
        return self  # numba's C dispatcher calls what this returns with the same arguments

    def get_call_template(self, args, kws):
        self.compile_pending()
        return super().get_call_template(args, kws)

    def compile(self, sig):
        self.compile_pending()
        return super().compile(sig)

    def get_function_type(self):
        self.compile_pending()
        return super().get_function_type()

    @property
    def _numba_type_(self):
        self.compile_pending()
        return super()._numba_type_

    def _reduce_states(self):
        self.compile_pending()
        return super()._reduce_states()
