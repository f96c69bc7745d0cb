"""On Cloud Run the in-process queue is refused unless the operator accepts its risk."""

from __future__ import annotations

import pytest

from pyloto_corp.config import ConfigError, load_settings

CLOUD_TASKS_ON_REDIS = {
    "QUEUE_BACKEND": "cloud_tasks",
    "GCP_PROJECT": "pyloto-prod",
    "INTERNAL_TASK_BASE_URL": "https://pyloto.example.com",
    "STATE_BACKEND": "redis",
    "REDIS_URL": "redis://10.0.0.3:6379/0",
}


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"K_SERVICE": "pyloto"}, id="defaults"),
        pytest.param({"K_SERVICE": "pyloto", "QUEUE_BACKEND": "local"}, id="local-named"),
        pytest.param(
            {"K_SERVICE": "pyloto", "ALLOW_LOCAL_QUEUE_ON_CLOUD_RUN": "false"}, id="not-allowed"
        ),
    ],
)
def test_the_local_queue_on_cloud_run_is_refused_saying_what_to_do(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    message = str(caught.value)
    assert "Cloud Run" in message
    assert "QUEUE_BACKEND=cloud_tasks" in message
    assert "ALLOW_LOCAL_QUEUE_ON_CLOUD_RUN=true" in message


def test_the_operator_may_accept_the_local_queue_on_cloud_run() -> None:
    settings = load_settings({"K_SERVICE": "pyloto", "ALLOW_LOCAL_QUEUE_ON_CLOUD_RUN": "true"})
    assert settings.queue.effective_backend == "local"


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"K_SERVICE": "pyloto", **CLOUD_TASKS_ON_REDIS}, id="cloud-run-tasks"),
        pytest.param({}, id="laptop"),
        pytest.param({"QUEUE_BACKEND": "local"}, id="laptop-local-named"),
    ],
)
def test_cloud_tasks_on_cloud_run_and_the_local_queue_elsewhere_start(
    environ: dict[str, str],
) -> None:
    assert load_settings(environ) is not None
