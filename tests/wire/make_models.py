"""`python -m tests.wire.make_models DIR` (runtime virtualenv): the two models the wire corpus is
sent to, saved under DIR/iris (sklearn classifier with a signature) and DIR/scaled (a pyfunc with a
signature, params and a DataFrame output)."""

from __future__ import annotations

import sys
from pathlib import Path

SCALED_CODE = '''
import mlflow
import pandas as pd


class Scaled(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        scale = (params or {}).get("scale", 1.0)
        return pd.DataFrame({"y": model_input["x"] * scale, "label": model_input["name"].str.upper()})


mlflow.models.set_model(Scaled())
'''


def main(target: Path) -> None:
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris(as_frame=True)
    features = iris.data.set_axis(["sl", "sw", "pl", "pw"], axis=1)
    classifier = LogisticRegression(max_iter=500).fit(features, iris.target)
    mlflow.sklearn.save_model(classifier, target / "iris",
                              signature=infer_signature(features, classifier.predict(features)))

    code = target / "scaled_model.py"
    code.write_text(SCALED_CODE)
    example = pd.DataFrame({"x": [1.0, 2.0], "name": ["a", "b"]})
    output = pd.DataFrame({"y": [1.0, 2.0], "label": ["A", "B"]})
    mlflow.pyfunc.save_model(target / "scaled", python_model=str(code),
                             signature=infer_signature(example, output, params={"scale": 1.0}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
