"""The serving baseline: the server a user would write by hand instead of ``raymlops serve``.

FastAPI + pydantic rows, the standardisation read straight from the version's features.json in
numpy, ``xgboost.Booster.inplace_predict`` with one thread, one uvicorn worker. No raymlops code
runs here. Usage: ``python benchmarks/baseline_server.py MODEL_DIR NAME PORT``, where MODEL_DIR
holds the version's model file and features.json (the benchmark exports them from the registry).
"""

import json
import sys
from pathlib import Path

import numpy as np
import uvicorn
import xgboost as xgb
from fastapi import FastAPI
from pydantic import BaseModel

model_dir, name, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
features = json.loads((model_dir / "features.json").read_text())
encodings, classes = features["encodings"], features["target"]["classes"]
booster = xgb.Booster()
booster.load_model(str(model_dir / "model.ubj"))
booster.set_param({"nthread": 1})
all_float = all(e["source_type"] == "float" for e in encodings)
Value = float if all_float else bool | float | str | None  # typed rows: JSON values


class Body(BaseModel):
    instances: list[dict[str, Value]]  # type: ignore[valid-type]


def column(enc: dict, values: list) -> list:
    """The columns features.json says one input column becomes."""
    missing = np.array([v is None for v in values])
    if enc["kind"] == "category":
        labels = np.array([None if v is None else str(v) for v in values], dtype=object)
        out = [labels == c for c in enc["categories"]]
        out += [~np.isin(labels, enc["categories"]) & ~missing] if enc["other"] else []
    else:
        if enc["source_type"] == "datetime":  # days since 1970-01-01
            values = [None if v is None else np.datetime64(v, "ns").astype(np.int64) / 86_400e9
                      for v in values]  # fmt: skip
        x = np.array([np.nan if v is None else float(v) for v in values])
        out = [np.where(missing, 0.0, (x - enc["mean"]) / enc["std"])]
    return out + ([missing] if enc["missing_indicator"] else [])


app = FastAPI()


@app.get("/readyz")
def ready() -> dict:
    return {"status": "ready"}


@app.post(f"/v1/models/{name}:predict")
async def predict(body: Body) -> dict:
    rows = body.instances
    blocks = [b for e in encodings for b in column(e, [r.get(e["name"]) for r in rows])]
    p = booster.inplace_predict(np.column_stack(blocks).astype(np.float64))
    proba = np.column_stack([1 - p, p]) if p.ndim == 1 else p
    return {"predictions": [classes[i] for i in proba.argmax(axis=1)],
            "probabilities": proba.tolist()}  # fmt: skip


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)
