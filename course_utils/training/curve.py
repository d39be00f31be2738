"""The training curve: loss and learning rate per step, drawn from mmengine's scalar log, live while it trains."""

from __future__ import annotations


def plot_training_curve(curve: list[dict], planned_lrs: list[float] | None = None, title: str = "", axes=None,
                        validation: list[dict] | None = None):
    """Loss (left) and learning rate (right) against the step; ``planned_lrs`` draws the schedule beneath,
    ``validation`` (rows with ``val_loss``, see ``training_curve``) the held-out loss beside the training loss."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    loss_ax, lr_ax = axes
    steps = [row["step"] for row in curve]
    loss_ax.plot(steps, [row["loss"] for row in curve], color="tab:blue", label="training")
    if validation:
        loss_ax.plot([row["step"] for row in validation], [row["val_loss"] for row in validation], "o-",
                     color="tab:red", label="held-out dishes")
        loss_ax.set_yscale("log")  # from the base's loss to a fine-tuned one's: orders of magnitude
        loss_ax.legend(loc="upper right")
    loss_ax.set(xlabel="step", ylabel="loss", title=title or "training loss")
    if planned_lrs:
        lr_ax.plot(range(1, len(planned_lrs) + 1), planned_lrs, color="lightgray", lw=3, label="schedule")
    lr_ax.plot(steps, [row["lr"] for row in curve], ".", color="tab:orange", ms=3, label="logged")
    lr_ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    lr_ax.legend(loc="upper right")
    if planned_lrs:
        for ax in axes:
            ax.set_xlim(0, len(planned_lrs) + 1)
    loss_ax.figure.tight_layout()
    return loss_ax.figure


class LiveCurve:
    """``train(..., on_update=LiveCurve(planned_lrs))`` redraws the curve in the notebook as steps are logged."""

    def __init__(self, planned_lrs: list[float] | None = None, title: str = ""):
        self.planned_lrs, self.title = planned_lrs, title
        self.handle = None

    def __call__(self, curve: list[dict]) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        figure = plot_training_curve(curve, self.planned_lrs, self.title)
        if self.handle is None:
            self.handle = display(figure, display_id=True)
        else:
            self.handle.update(figure)
        plt.close(figure)
