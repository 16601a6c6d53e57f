"""`python -m mlflow_serving.rehearse --model-uri models:/NAME/VERSION`: what a serving pod does
before it turns ready (download, restore the recorded environment, load the model), once, then
print one JSON line: {"environment": summary, "input_example": the model's serving input example
or null}. Exit 1 with {"error": reason} when the environment cannot be built or the model not
loaded. `make promote` runs it before it moves an alias, with the serving image and settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from mlflow_serving.environment import EnvironmentBuilder, EnvironmentRefused, EnvironmentSettings, activate

SERVING_EXAMPLE = "serving_input_example.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlflow_serving.rehearse", description=__doc__)
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--env-cache", required=True)
    parser.add_argument("--env-timeout", type=float, default=300.0)
    parser.add_argument("--package-index", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    from mlflow.pyfunc import scoring_server
    from mlflow.artifacts import download_artifacts

    settings = EnvironmentSettings(Path(args.env_cache), args.env_timeout, args.package_index or None)
    try:
        path = Path(download_artifacts(artifact_uri=args.model_uri, dst_path=tempfile.mkdtemp(prefix="rehearse-")))
        restored = EnvironmentBuilder(settings).restore(path)
        activate(restored)
        scoring_server.load_model_with_mlflow_config(str(path))
    except EnvironmentRefused as err:
        print(json.dumps({"error": f"its environment cannot be built: {err}"}))
        return 1
    except Exception as err:  # what a pod would report: the model does not load
        print(json.dumps({"error": f"it cannot be loaded: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}))
        return 1
    example = path / SERVING_EXAMPLE
    print(json.dumps({"environment": restored.summary,
                      "input_example": json.loads(example.read_text()) if example.exists() else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
