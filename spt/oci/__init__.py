"""`spt-oci`: a runc-compatible OCI runtime that runs Solo5 spt unikernels as containers.

One module per command (create, start, state, kill, delete, ps, pause,
features, exec) over one `State` record per container (spt/oci/state.py);
`main` parses the global flags, dispatches, and turns every refusal into one
line (and one JSON error object in `--log`). Containers whose process is not
an spt unikernel are handed, call by call, to the host's runc or crun
(spt/oci/delegate.py).
"""
