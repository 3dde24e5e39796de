"""A data directory's identity (broadcast.identity): recorded on the first start,
checked on every later one."""

from __future__ import annotations

from pathlib import Path

import pytest

from broadcast.identity import establish
from broadcast.spec import Cluster, ConfigError


def start(data: Path, node: int, cluster: Cluster) -> int:
    identity = establish(
        data, node, cluster, cluster_id=None, max_payload_bytes=None,
        default_max_payload_bytes=1000,
    )
    return identity.node_id


def test_a_member_added_later_restarts_from_its_data_directory(tmp_path: Path) -> None:
    """Node 4 joined a cluster that started with 1, 2 and 3: its identity records those
    starting members, which it is not one of, and it must start again from it (the
    chaos harness's reconfigure fault found it refused as 'damaged' after a kill)."""
    cluster = Cluster(
        {i: f"127.0.0.1:{7000 + i}" for i in (1, 2, 3, 4)}, cluster_id="c", genesis=(1, 2, 3)
    )
    assert start(tmp_path, 4, cluster) == 4
    assert start(tmp_path, 4, cluster) == 4  # the restart
    with pytest.raises(ConfigError, match="belongs to node 4"):
        start(tmp_path, 3, cluster)
