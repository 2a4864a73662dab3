"""featx serve on Ray Serve: the same app in two replicas of the local Ray instance."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import free_port, wait_ready

pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")


def test_ray_serve_replicas_answer_like_featx_predict(ray_session, tiny_bundle, tiny_store):
    from ray import serve

    from featx.predict import predict
    from featx.serve import ServeSettings
    from featx.serve_ray import APP_NAME, deployment
    from featx.store import read_meta

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(deployment(tiny_bundle, tiny_store, ServeSettings(max_batch=4), replicas=2,
                             num_cpus=0.5), name=APP_NAME, route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=300)
        states = serve.status().applications[APP_NAME].deployments["FeatxServe"].replica_states
        assert states.get("RUNNING") == 2
        data = read_meta(tiny_store)["data_dir"]
        files = [f"{data}/circle/circle_001.jpg", f"{data}/star/star_003.jpg"]
        expected = predict(tiny_bundle, files).as_dict()["predictions"]
        with httpx.Client(base_url=url, timeout=120) as c:
            for _ in range(3):  # a few requests: Ray spreads them over the replicas
                r = c.post("/v1/predict", files=[("p", (f.rsplit("/", 1)[1], open(f, "rb").read(),
                                                        "image/jpeg")) for f in files])
                assert r.status_code == 200, r.text
                for got, want in zip(r.json()["predictions"], expected):
                    assert got["label"] == want["label"]
                    for cls, p in want["probabilities"].items():
                        assert got["probabilities"][cls] == pytest.approx(p, abs=2e-6)
                    assert got["neighbors"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
            bad = c.post("/v1/predict", content=b"nope", headers={"content-type": "image/png"})
            assert bad.status_code == 422 and "not an image" in bad.json()["error"]
            assert c.get("/v1/info").json()["settings"]["max_batch"] == 4
    finally:
        serve.shutdown()
