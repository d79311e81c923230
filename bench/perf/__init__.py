"""Timings of the suite on this machine, one module per benchmark (`python -m bench.perf <name>`, see `cli`):

    models     a roofline per model and bag size: a training step's time, FLOPs (`flops`) and GFLOP/s against
               this machine's matmul, and the op that takes most of it
    sweep      a slice of the embedded default timed here, the whole default's wall time projected
    transmil   TransMIL's exact short-bag attention path beside the library path it replaces
    ray        what a private Ray costs before any job
    io         one cohort's bags read cold and warm beside the disk's own read

None computes a result: `bench/provenance.py` leaves the package out of the suite version.
"""
