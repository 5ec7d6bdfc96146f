"""Sends a draftalign training run's metrics to Weights & Biases: it follows <run>/metrics.jsonl, the file the trainer
writes, and logs each new record as W&B history at the record's step. Embedded in the draftalign binary and started
by it with the run (run.report_to: [..., wandb]); the trainer never waits on W&B, since this process only reads the
file.

Protocol, on stdin and stdout (a socket pair with the trainer):
  first line  {"metrics": "<run>/metrics.jsonl", "offset": <bytes already logged>, "dir": "<run>", "project": "...",
               "name": "...", "id": "...", "config_yaml": "<the resolved configuration>"}
              answer {"mode": "offline", "run_dir": "..."} once wandb.init has returned, else {"error": "..."}
  then        nothing: end of input (the trainer finished, failed or was killed) makes it read the rest of the file,
              finish the W&B run and exit.
Mode: $WANDB_MODE when set; else online when an API key is set ($WANDB_API_KEY or ~/.netrc), offline otherwise
(`wandb sync <run_dir>` uploads an offline run later).
"""
import json
import netrc
import os
import select
import sys


def api_key_available():
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class Follower:
    """The complete lines appended to a file since `offset`."""

    def __init__(self, path, offset):
        self.path, self.offset, self.partial = path, offset, b""

    def new_records(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()  # an unfinished last line waits for the rest
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by a kill before a resume; the trainer drops it too
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


def scalars(record):
    return {k: v for k, v in record.items()
            if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def main():
    answer_fd = os.dup(1)
    os.dup2(2, 1)  # whatever W&B prints goes to the trainer's stderr, not into the answer channel

    def answer(obj):
        os.write(answer_fd, (json.dumps(obj) + "\n").encode())

    first = sys.stdin.readline()
    if not first:
        return
    init = json.loads(first)
    try:
        import wandb
    except Exception as e:  # noqa: BLE001 - any import failure is reported to the trainer as one line
        answer({"error": f"run.report_to has wandb, but {sys.executable} cannot import wandb ({e}); "
                         f"pip install wandb there, or set DRAFTALIGN_PYTHON to a Python that has it"})
        return
    mode = os.environ.get("WANDB_MODE") or ("online" if api_key_available() else "offline")
    try:
        import yaml  # a dependency of wandb

        config = yaml.safe_load(init["config_yaml"]) if init["config_yaml"] else {}
        run = wandb.init(project=init["project"], name=init["name"], id=init["id"], resume="allow",
                         dir=init["dir"], config=config, mode=mode,
                         settings=wandb.Settings(console="off", save_code=False))
    except Exception as e:  # noqa: BLE001
        answer({"error": f"wandb.init failed ({type(e).__name__}: {e})"})
        return
    answer({"mode": mode, "run_dir": os.path.dirname(run.dir)})  # run.dir is its files/
    os.close(answer_fd)

    follower, last_step = Follower(init["metrics"], init["offset"]), -1

    def log_new():
        nonlocal last_step
        for record in follower.new_records():
            step = record.get("step")
            if not isinstance(step, int) or step < last_step:
                continue  # W&B history steps only go forward
            values = scalars(record)
            if values:
                run.log(values, step=step)
                last_step = step

    while True:
        readable, _, _ = select.select([sys.stdin], [], [], 1.0)
        log_new()
        if readable and not os.read(sys.stdin.fileno(), 4096):
            break  # end of input: the trainer is done
    log_new()
    run.finish()


if __name__ == "__main__":
    main()
