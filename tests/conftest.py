"""Shared test setup: MuJoCo renders headless (EGL) when a test renders, whichever module imports mujoco first."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
