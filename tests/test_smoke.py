from conftest import T


def test_submit_and_wait(client):
    job_id = client.submit(T + "add", args=[2, 3])
    job = client.wait(job_id, timeout=10)
    assert job.status == "completed"
    assert job.result == 5
    assert job.attempts == 1


def test_status_of_a_completed_job_carries_its_result(client):
    job_id = client.submit(T + "add", args=[2, 3])
    client.wait(job_id, timeout=10)
    job = client.status(job_id)
    assert job.status == "completed" and job.result == 5
    pending = client.submit(T + "add", args=[1, 1], delay=3600)
    assert client.status(pending).result is None        # not completed: no result call
