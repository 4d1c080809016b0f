"""Start the TGIF demo: ``python app.py`` (settings: ``TGIF_APP_*`` variables, see app/config.py).

``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` choose where it listens (Gradio's own variables;
a Hugging Face Space sets them). Analytics are off; nothing is fetched from the internet.
"""

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.config import AppConfig  # noqa: E402
from app.layout import CSS, build_demo  # noqa: E402

config = AppConfig.from_env()
demo = build_demo(config)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo.queue(default_concurrency_limit=config.concurrency, max_size=config.queue_size).launch(
        allowed_paths=[str(config.output_dir)], show_error=True, css=CSS
    )
