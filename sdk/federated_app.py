"""The Flower ServerApp and ClientApp of robota's federated training (Flower 1.42 Message API).

The coordinator's SuperLink runs `server_app`, which drives `robota.federated_rounds` over the
Flower grid; each site's SuperNode runs `client_app`. The site's dataset path is read from the
SuperNode's node config (`data-path`) and stays on the site.

Messages:

| type | coordinator sends | site replies |
|---|---|---|
| `query` | nothing | `info.json`: spec, dataset statistics, sample count |
| `train` | `arrays` (global state dict), `config.json` (round settings), `config.stats` | `update` and `scales` arrays, `metrics` (num-samples, sent-bytes, loss) |
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from robota.federated import APP_CONFIG_KEY, FederationConfig, FederationError
from robota.federated_rounds import SiteReply, open_site_dataset, run_federation, site_info, site_round

logger = logging.getLogger(__name__)

DATA_PATH_KEY = "data-path"
# Node config key that makes a site send a NaN update; used by tests of the screening.
FAULT_KEY = "fault"

server_app = ServerApp()
client_app = ClientApp()


class FlowerTransport:
    """The coordinator's `Transport` over a Flower grid.

    Args:
        grid: The ServerApp's grid.
    """

    def __init__(self, grid: Grid):
        self.grid = grid

    def node_ids(self) -> list[int]:
        """Return the ids of the SuperNodes connected to the SuperLink."""
        return sorted(self.grid.get_node_ids())

    def query(self, nodes: list[int], timeout_s: float) -> dict[int, dict[str, Any]]:
        """Send `query` messages and return each site's decoded info by node id."""
        messages = [Message(RecordDict(), dst_node_id=node, message_type="query") for node in nodes]
        replies = self._exchange(messages, timeout_s, "setup query")
        return {node: json.loads(str(content["info"]["json"])) for node, content in replies.items()}

    def train(
        self, nodes: list[int], state: Mapping[str, torch.Tensor], settings: dict[str, Any],
        stats: dict[str, Any], timeout_s: float,
    ) -> dict[int, SiteReply]:
        """Send the global weights and round settings; return the decoded replies by node id."""
        content = RecordDict(
            {
                "arrays": ArrayRecord(torch_state_dict=dict(state)),
                "config": ConfigRecord({"json": json.dumps(settings), "stats": json.dumps(stats)}),
            }
        )
        messages = [Message(content, dst_node_id=node, message_type="train") for node in nodes]
        replies = self._exchange(messages, timeout_s, f"round {settings['round']}")
        return {node: _decode_reply(content) for node, content in replies.items()}

    def _exchange(self, messages: list[Message], timeout_s: float, stage: str) -> dict[int, RecordDict]:
        replies: dict[int, RecordDict] = {}
        received = list(self.grid.send_and_receive(messages, timeout=timeout_s))
        # The grid sets each message's id while pushing it. An error reply that the SuperLink
        # writes for an unreachable node comes from the SuperLink, so its source is not the site.
        destination = {message.metadata.message_id: message.metadata.dst_node_id for message in messages}
        for reply in received:
            node = destination.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            if reply.has_error():
                logger.warning("%s: node %d replied with an error: %s", stage, node, reply.error.reason)
                continue
            replies[node] = reply.content
        return replies


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    """Run the federation described by the run config's `robota-config` entry."""
    _configure_logging()
    config = FederationConfig.from_json(str(context.run_config[APP_CONFIG_KEY]))
    run_federation(FlowerTransport(grid), config)


@client_app.query()
def site_query(message: Message, context: Context) -> Message:
    """Reply with the site dataset's spec, statistics and sample count; never its path."""
    _configure_logging()
    info = site_info(open_site_dataset(_data_path(context), chunk_size=1))
    return Message(RecordDict({"info": ConfigRecord({"json": json.dumps(info)})}), reply_to=message)


@client_app.train()
def site_train(message: Message, context: Context) -> Message:
    """Train the received global policy for `local_steps` steps and reply with its update."""
    _configure_logging()
    settings = json.loads(str(message.content["config"]["json"]))
    stats = json.loads(str(message.content["config"]["stats"]))
    state = message.content["arrays"].to_torch_state_dict()
    dataset = open_site_dataset(_data_path(context), chunk_size=settings["chunk_size"])

    fault = context.node_config.get(FAULT_KEY)
    reply = site_round(dataset, state, stats, settings, fault=str(fault) if fault else None)
    content = RecordDict(
        {
            "update": ArrayRecord(array_dict=_to_arrays(reply.payload)),
            "scales": ArrayRecord(array_dict=_to_arrays(reply.scales)),
            "metrics": MetricRecord(
                {"num-samples": reply.num_samples, "sent-bytes": reply.sent_bytes, "loss": reply.loss}
            ),
        }
    )
    return Message(content, reply_to=message)


def _decode_reply(content: RecordDict) -> SiteReply:
    metrics = content["metrics"]
    return SiteReply(
        payload={name: array.numpy() for name, array in content["update"].items()},
        scales={name: array.numpy() for name, array in content["scales"].items()},
        num_samples=int(metrics["num-samples"]),
        sent_bytes=int(metrics["sent-bytes"]),
        loss=float(metrics["loss"]),
    )


def _data_path(context: Context) -> str:
    path = context.node_config.get(DATA_PATH_KEY)
    if not path:
        raise FederationError(
            f"the SuperNode has no {DATA_PATH_KEY!r} node config; start it with "
            f"`robota federate site --data DIR` or --node-config '{DATA_PATH_KEY}=\"DIR\"'"
        )
    return str(path)


def _to_arrays(tensors: Mapping[str, np.ndarray]) -> dict[str, Array]:
    return {name: Array(np.ascontiguousarray(tensor)) for name, tensor in tensors.items()}


def _configure_logging() -> None:
    """Send robota's records to stderr in the app processes, which Flower leaves unconfigured."""
    robota_logger = logging.getLogger("robota")
    if not robota_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        robota_logger.addHandler(handler)
        robota_logger.setLevel(logging.INFO)
