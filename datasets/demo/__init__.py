"""The demo simulations: a forced isotropic DNS (:mod:`.isotropic`), an analytic channel flow
(:mod:`.channel`) and a particle-mesh N-body code (:mod:`.nbody`), built into datasets through the user's
ingest paths by :mod:`.build` (``labservice demo build``). Import the modules themselves: each is heavy.
"""
