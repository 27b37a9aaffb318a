"""What every command after create does first: find the container, and hand
a delegated one to its runtime."""

from __future__ import annotations

from spt.oci import delegate
from spt.oci.state import State, Store, check_id


def load_or_delegate(g, container_id: str) -> tuple[Store, State | None]:
    """(store, state) of a container spt-oci runs itself; a delegated one
    is handed to its runtime here (this never returns for it). The state is
    None for an unknown ID."""
    store = Store(g.root)
    state = store.load(check_id(container_id))
    if state is not None and state.delegate:
        delegate.hand_off(state.delegate, g.argv)
    return store, state
