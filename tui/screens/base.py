"""What every screen that shows the model has in common."""
from __future__ import annotations

from textual.screen import Screen

from ..model import DashboardModel


class ModelScreen(Screen):
    """A screen the app hands each new model to (the one on top, and the others when they
    come back on top)."""

    def show_model(self, model: DashboardModel) -> None:
        raise NotImplementedError

    def on_screen_resume(self) -> None:
        model = getattr(self.app, "model", None)
        if model is not None:
            self.show_model(model)
