"""KServe's own V1 REST client against a raymlops server: liveness, readiness, predictions.

It runs in the KServe SDK's environment, not raymlops's (see ``requirements.txt`` here)::

    .venv-kserve/bin/python tests/kserve/v1_client.py URL MODEL ROWS_JSON

and prints one JSON object: what KServe's client made of each answer.
"""

import asyncio
import json
import sys

import httpx
from kserve import InferenceRESTClient, RESTConfig


async def main(url: str, model: str, rows_path: str) -> dict:
    with open(rows_path) as f:
        instances = json.load(f)
    async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=60)) as client:
        live = await client.is_server_live(url)
        ready = await client.is_model_ready(url, model)
        answer = await client.infer(url, {"instances": instances}, model_name=model)
        try:
            await client.infer(url, {"instances": instances}, model_name=f"{model}-missing")
            missing = None
        except httpx.HTTPStatusError as exc:  # the SDK raises for every non-2xx
            missing = exc.response.status_code
    return {"live": live, "ready": ready, "answer": answer, "unknown_model_status": missing}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
