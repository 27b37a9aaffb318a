"""Sub-commands of `spt`: each module here defines `register(app)`.

`spt.tool` discovers the modules, so adding a command means adding a file.
"""
