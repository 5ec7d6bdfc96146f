#!/usr/bin/env python3
"""Reads back what a draftalign training run sent to its trackers (run.report_to), with the trackers' own readers,
and prints it as one JSON object:

    python tools/read_trackers.py RUN_DIR
    {"tensorboard": {"loss": [[step, value], ...], ...},                 # tensorboard's EventAccumulator
     "wandb": [{"file": ".../run-<id>.wandb", "id": "<id>", "history": {"loss": [[step, value], ...], ...}}, ...]}

TensorBoard: RUN_DIR/tensorboard through tensorboard.backend.event_processing.EventAccumulator. W&B: every offline
(or synced) run under RUN_DIR/wandb, its transaction log (.wandb: W&B's LevelDB-style record log) decoded with the
Record protobuf that ships in the wandb package. The tests compare both with RUN_DIR/metrics.jsonl.
"""
import glob
import json
import os
import struct
import sys


def tensorboard_scalars(run_dir):
    path = os.path.join(run_dir, "tensorboard")
    if not os.path.isdir(path):
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(path, size_guidance={"scalars": 0})  # 0 = keep every point
    acc.Reload()
    return {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_records(path):
    """The records of a .wandb file: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks
    (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last), as LevelDB's log format."""
    block = 32768
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pending
            pending = b""


def wandb_runs(run_dir):
    from wandb.proto import wandb_internal_pb2

    runs = []
    for path in sorted(glob.glob(os.path.join(run_dir, "wandb", "*run-*", "run-*.wandb"))):
        history, run_id = {}, None
        for raw in wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_id = record.run.run_id
            elif kind == "history":
                step = record.history.step.num
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if key.startswith("_"):  # W&B's own (_step, _runtime, _timestamp)
                        continue
                    history.setdefault(key, []).append([step, json.loads(item.value_json)])
        runs.append({"file": path, "id": run_id, "history": history})
    return runs


def main():
    run_dir = sys.argv[1]
    print(json.dumps({"tensorboard": tensorboard_scalars(run_dir), "wandb": wandb_runs(run_dir)}))


if __name__ == "__main__":
    main()
