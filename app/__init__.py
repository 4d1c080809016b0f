"""The TGIF Gradio demo: upload a pair, see its maps, edit captions, fuse, compare runs.

``app.layout.build_demo()`` returns the ``gr.Blocks``; ``python app.py`` launches it. The UI
calls only the ``tgif`` library (``app.models`` holds the shared, lazily loaded objects).
"""

from app.layout import build_demo

__all__ = ["build_demo"]
