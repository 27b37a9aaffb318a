"""spt's benchmarks: `make bench` = `python -m bench`.

One module per figure (launch, memory, bpf, io, density), each returning a
`results.Section` of plain data; `report` prints them and writes
docs/benchmarks.md, docs/benchmarks.json and docs/img/*.png; `stats` holds
the medians, quartiles and ratios every figure is given in.
"""
