"""`ray start` for the cluster tier's nodes, with every address on 127.0.0.1.

Ray keeps a node on the loopback address only under RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: otherwise it
rewrites `--node-ip-address 127.0.0.1`, and a head address on 127.0.0.1, to this machine's network address
(`ray._private.services.resolve_ip_for_localhost`), so that other machines could reach the node. Under that
setting its CLI refuses to start a second node, a check that Ray's own multi-node test utility
(`ray.cluster_utils.Cluster`) does not make either. This is `ray start` as it is, less that one check:

    python tests/cluster/ray_start.py start --block --head ...      (or --address 127.0.0.1:PORT)
"""

import os
import sys
import types

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when Ray is first imported

import ray._private.ray_constants as ray_constants  # noqa: E402
from ray.scripts import scripts  # noqa: E402

# the CLI's own view of the constant only: every address Ray resolves still reads the real one (loopback)
scripts.ray_constants = types.SimpleNamespace(**{**vars(ray_constants), "ENABLE_RAY_CLUSTER": True})

if __name__ == "__main__":
    sys.exit(scripts.main())
