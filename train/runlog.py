"""What a run reports: a rich progress bar with every loss term, TensorBoard scalars, metrics.csv.

Only rank 0 creates a :class:`RunLog`; other ranks get :class:`SilentLog`. ``metrics.csv`` is
rewritten whole from the history kept in the checkpoint, so a resumed run never duplicates rows.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from geolink_edge.atomic import write_text


def format_terms(terms: dict[str, float]) -> str:
    return " ".join(f"{name} {value:.3g}" for name, value in terms.items())


def history_csv(history: list[dict]) -> str:
    """CSV text of per-epoch records (columns: the union of keys, in first-seen order)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()


class RunLog:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int, quiet: bool = False):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        # purge_step drops events written after the checkpoint a resumed run restarts from
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step or None)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[terms]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=quiet,
        )
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=start_step, epoch=0, terms=""
        )

    def __enter__(self) -> RunLog:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
        self.writer.close()

    def step(self, step: int, epoch: int, terms: dict[str, float], lr: float) -> None:
        for name, value in terms.items():
            self.writer.add_scalar(f"loss/{name}", value, step)
        self.writer.add_scalar("lr", lr, step)
        self.progress.update(self.task, completed=step, epoch=epoch, terms=format_terms(terms))

    def epoch(self, step: int, record: dict, history: list[dict]) -> None:
        for name, value in record.items():
            if name.startswith("val/"):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()
        write_text(self.run_dir / "metrics.csv", history_csv(history))

    def note(self, text: str) -> None:
        self.progress.console.print(text)


class SilentLog:
    """The logger of ranks other than 0: does nothing."""

    def __enter__(self) -> SilentLog:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def step(self, *args, **kwargs) -> None:
        pass

    def epoch(self, *args, **kwargs) -> None:
        pass

    def note(self, text: str) -> None:
        pass
